//! Wrappers of `kernels/softmax.cu`: row softmax / log-softmax and their gradients, and cross
//! entropy with label smoothing (per-row loss and its gradient), over contiguous `[rows, cols]`.

use super::compile::SOFTMAX;
use super::launch::{self, int, launch};
use super::CudaDevice;
use crate::Result;
use cudarc::driver::CudaSlice;

impl CudaDevice {
    /// Softmax (log-softmax when `log`) of each row of `x` `[rows, cols]`, into a new `[rows, cols]`.
    pub fn softmax_rows(&self, x: &CudaSlice<f32>, rows: usize, cols: usize, log: bool) -> Result<CudaSlice<f32>> {
        let mut y = self.alloc::<f32>(rows * cols)?;
        let (r, c) = (int(rows, "softmax_rows")?, int(cols, "softmax_rows")?);
        let cfg = launch::per_row(rows);
        if log {
            launch!(self, SOFTMAX, "log_softmax_rows_f32", cfg, x, &mut y, &r, &c);
        } else {
            launch!(self, SOFTMAX, "softmax_rows_f32", cfg, x, &mut y, &r, &c);
        }
        Ok(y)
    }

    /// Gradient of [`CudaDevice::softmax_rows`] from its output `y` and the upstream `gy`, all
    /// `[rows, cols]`: `y * (gy - sum(gy * y))`, or `gy - exp(y) * sum(gy)` when `log`.
    pub fn softmax_rows_backward(
        &self,
        y: &CudaSlice<f32>,
        gy: &CudaSlice<f32>,
        rows: usize,
        cols: usize,
        log: bool,
    ) -> Result<CudaSlice<f32>> {
        let mut gx = self.alloc::<f32>(rows * cols)?;
        let (r, c) = (int(rows, "softmax_rows_backward")?, int(cols, "softmax_rows_backward")?);
        let cfg = launch::per_row(rows);
        if log {
            launch!(self, SOFTMAX, "log_softmax_bwd_rows_f32", cfg, y, gy, &mut gx, &r, &c);
        } else {
            launch!(self, SOFTMAX, "softmax_bwd_rows_f32", cfg, y, gy, &mut gx, &r, &c);
        }
        Ok(gx)
    }

    /// Per-row cross entropy `[rows]` of `logits` `[rows, cols]` against `labels` `[rows]` (in
    /// `[0, cols)`; another value gives a NaN loss): `(1 - eps) * nll + eps * mean_c(-log p_c)`
    /// with `eps = smoothing`. The caller takes the mean over rows.
    pub fn cross_entropy(
        &self,
        logits: &CudaSlice<f32>,
        labels: &CudaSlice<i32>,
        smoothing: f32,
        rows: usize,
        cols: usize,
    ) -> Result<CudaSlice<f32>> {
        let mut loss = self.alloc::<f32>(rows)?;
        let (r, c) = (int(rows, "cross_entropy")?, int(cols, "cross_entropy")?);
        launch!(
            self,
            SOFTMAX,
            "cross_entropy_fwd_f32",
            launch::per_row(rows),
            logits,
            labels,
            &smoothing,
            &mut loss,
            &r,
            &c
        );
        Ok(loss)
    }

    /// Gradient `[rows, cols]` of [`CudaDevice::cross_entropy`] with respect to the logits, given
    /// the upstream gradient of each row's loss `gloss` `[rows]` (`1 / rows` each for a mean):
    /// `gloss[r] * (softmax(logits[r]) - q)` with `q = (1 - eps) onehot(label) + eps / cols`.
    pub fn cross_entropy_backward(
        &self,
        logits: &CudaSlice<f32>,
        labels: &CudaSlice<i32>,
        smoothing: f32,
        gloss: &CudaSlice<f32>,
        rows: usize,
        cols: usize,
    ) -> Result<CudaSlice<f32>> {
        let mut glogits = self.alloc::<f32>(rows * cols)?;
        let (r, c) = (int(rows, "cross_entropy_backward")?, int(cols, "cross_entropy_backward")?);
        let cfg = launch::per_row(rows);
        launch!(self, SOFTMAX, "cross_entropy_bwd_f32", cfg, logits, labels, &smoothing, gloss, &mut glogits, &r, &c);
        Ok(glogits)
    }
}

// ------------------------------------------------------------------ tensor ops

use super::tensor::{device_of, f32_only, from_f32, with_f32};
use crate::autograd::Op;
use crate::Tensor;

struct SoftmaxRowsOp {
    log: bool,
}

impl Op for SoftmaxRowsOp {
    fn name(&self) -> &'static str {
        if self.log {
            "log_softmax"
        } else {
            "softmax"
        }
    }
    fn backward(&self, _: &[Tensor], out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let cols = *out.dims().last().unwrap_or(&1);
        let rows = out.numel() / cols.max(1);
        let gx = with_f32(out, self.name(), |dev, y| {
            with_f32(g, self.name(), |_, gy| dev.softmax_rows_backward(y, gy, rows, cols, self.log))
        })?;
        Ok(vec![Some(from_f32(&device_of(out)?, gx, out.dims()))])
    }
}

/// Softmax (or log-softmax) over dim `d` of a CUDA tensor: the row kernel over the last dim,
/// other dims moved last and back (views, recorded by autograd).
pub(crate) fn softmax(x: &Tensor, d: usize, log: bool) -> Result<Tensor> {
    let name = if log { "log_softmax" } else { "softmax" };
    f32_only(x, name)?;
    let last = x.rank() - 1;
    if d != last {
        let moved = x.transpose(d as isize, last as isize)?;
        return softmax(&moved, last, log)?.transpose(d as isize, last as isize);
    }
    let cols = x.dims()[last];
    let rows = x.numel().checked_div(cols).unwrap_or(0);
    let y = with_f32(x, name, |dev, xs| dev.softmax_rows(xs, rows, cols, log))?;
    Ok(from_f32(&device_of(x)?, y, x.dims()).attach_op(vec![x.clone()], SoftmaxRowsOp { log }))
}

struct CrossEntropyOp {
    labels: cudarc::driver::CudaSlice<i32>,
    smoothing: f32,
}

impl Op for CrossEntropyOp {
    fn name(&self) -> &'static str {
        "cross_entropy"
    }
    fn backward(&self, inputs: &[Tensor], _: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let x = &inputs[0];
        let (n, c) = (x.dims()[0], x.dims()[1]);
        // The mean over rows: every row's loss gets g / n.
        let gloss = g.detach().reshape(&[1])?.expand(&[n])?.mul_scalar(1.0 / n as f64)?.contiguous()?;
        let gx = with_f32(x, "cross_entropy", |dev, xs| {
            with_f32(&gloss, "cross_entropy", |_, gl| {
                dev.cross_entropy_backward(xs, &self.labels, self.smoothing, gl, n, c)
            })
        })?;
        Ok(vec![Some(from_f32(&device_of(x)?, gx, x.dims()))])
    }
}

/// Mean cross entropy of CUDA logits `[n, c]` against host class indices (already checked).
pub(crate) fn cross_entropy(x: &Tensor, targets: &[usize], smoothing: f64) -> Result<Tensor> {
    f32_only(x, "cross_entropy")?;
    let (n, c) = (x.dims()[0], x.dims()[1]);
    let dev = device_of(x)?;
    let labels: Vec<i32> = targets.iter().map(|&t| t as i32).collect();
    let labels = dev.upload(&labels)?;
    let rows = with_f32(x, "cross_entropy", |dev, xs| dev.cross_entropy(xs, &labels, smoothing as f32, n, c))?;
    let loss = from_f32(&dev, rows, &[n]).mean_all()?.detach();
    Ok(loss.attach_op(vec![x.clone()], CrossEntropyOp { labels, smoothing: smoothing as f32 }))
}

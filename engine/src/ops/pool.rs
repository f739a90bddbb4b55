//! Pooling over NCHW tensors: max, average (`count_include_pad=True`, as PyTorch's default),
//! adaptive average and global average, each with its backward. Kernels in `cpu/pool.rs`, and
//! in `cuda/pool.rs` for f32 tensors on a GPU.

use crate::autograd::Op;
use crate::cpu::pool::{adaptive_windows, avg_backward, avg_forward, max_backward, max_forward, sliding_windows, Win};
use crate::cuda::pool::Pool2d;
use crate::{shape_err, with_float, DType, Error, Result, Tensor};

/// `[N, C, H, W]` of a pooling input, or a shape error naming the op (CUDA pools f32 only).
fn nchw(op: &'static str, x: &Tensor) -> Result<[usize; 4]> {
    if !x.device().is_cpu() && x.dtype() != DType::F32 {
        return Err(Error::UnsupportedDType { op, dtype: x.dtype() });
    }
    match x.dims() {
        &[n, c, h, w] => Ok([n, c, h, w]),
        d => shape_err(op, format!("input must be [N, C, H, W], got {d:?}")),
    }
}

/// Output extent of a sliding pool, checking PyTorch's constraints.
fn pool_out(op: &'static str, dims: &[usize], n: usize, kernel: usize, stride: usize, padding: usize) -> Result<usize> {
    if kernel == 0 || stride == 0 {
        return shape_err(op, format!("kernel {kernel} and stride {stride} must be >= 1"));
    }
    if 2 * padding > kernel {
        return shape_err(op, format!("padding {padding} must be at most half the kernel {kernel}"));
    }
    match (n + 2 * padding).checked_sub(kernel) {
        Some(v) => Ok(v / stride + 1),
        None => shape_err(op, format!("kernel {kernel} (padding {padding}) is larger than input {dims:?}")),
    }
}

/// The CUDA kernels' geometry of a square pool of `dims` into `out` (adaptive pools pass the
/// output size only: their kernels ignore kernel, stride and padding).
fn sliding([n, c, h, w]: [usize; 4], kernel: usize, stride: usize, padding: usize, out: [usize; 2]) -> Pool2d {
    Pool2d { n, c, h, w, kernel: [kernel; 2], stride: [stride; 2], pad: [padding; 2], out }
}

struct AvgPoolOp {
    dims: [usize; 4],
    ys: Vec<Win>,
    xs: Vec<Win>,
    name: &'static str,
}

impl Op for AvgPoolOp {
    fn name(&self) -> &'static str {
        self.name
    }
    fn backward(&self, inputs: &[Tensor], _: &Tensor, go: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let [n, c, h, w] = self.dims;
        with_float!(inputs[0].dtype(), self.name, |T| {
            let v = go.with_slice::<T, _>(|g| avg_backward(g, n * c, h, w, &self.ys, &self.xs))?;
            Ok(vec![Some(Tensor::from_vec(v, &self.dims)?)])
        })
    }
}

struct MaxPoolOp {
    dims: [usize; 4],
    argmax: Vec<usize>,
    pout: usize,
}

impl Op for MaxPoolOp {
    fn name(&self) -> &'static str {
        "max_pool2d"
    }
    fn backward(&self, inputs: &[Tensor], _: &Tensor, go: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let [n, c, h, w] = self.dims;
        with_float!(inputs[0].dtype(), "max_pool2d", |T| {
            let v = go.with_slice::<T, _>(|g| max_backward(g, &self.argmax, n * c, h * w, self.pout))?;
            Ok(vec![Some(Tensor::from_vec(v, &self.dims)?)])
        })
    }
}

impl Tensor {
    /// Average pooling over windows given per axis (shared by avg/adaptive/global pooling).
    fn avg_pool_windows(&self, name: &'static str, dims: [usize; 4], ys: Vec<Win>, xs: Vec<Win>) -> Result<Tensor> {
        let [n, c, h, w] = dims;
        let shape = [n, c, ys.len(), xs.len()];
        let out = with_float!(self.dtype(), name, |T| {
            let v = self.with_slice::<T, _>(|x| avg_forward(x, n * c, h, w, &ys, &xs))?;
            Tensor::from_vec(v, &shape)
        })?;
        Ok(out.attach_op(vec![self.clone()], AvgPoolOp { dims, ys, xs, name }))
    }

    /// Max pooling with a square `kernel`, `stride` and implicit -inf `padding` (floor mode).
    pub fn max_pool2d(&self, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
        const OP: &str = "max_pool2d";
        let dims = nchw(OP, self)?;
        let [n, c, h, w] = dims;
        let oh = pool_out(OP, self.dims(), h, kernel, stride, padding)?;
        let ow = pool_out(OP, self.dims(), w, kernel, stride, padding)?;
        if !self.device().is_cpu() {
            return crate::cuda::pool::max_pool2d(self, sliding(dims, kernel, stride, padding, [oh, ow]));
        }
        let (ys, xs) =
            (sliding_windows(h, oh, kernel, stride, padding), sliding_windows(w, ow, kernel, stride, padding));
        let (out, argmax) = with_float!(self.dtype(), OP, |T| {
            let (v, arg) = self.with_slice::<T, _>(|x| max_forward(x, n * c, h, w, &ys, &xs))?;
            Ok((Tensor::from_vec(v, &[n, c, oh, ow])?, arg))
        })?;
        Ok(out.attach_op(vec![self.clone()], MaxPoolOp { dims, argmax, pout: oh * ow }))
    }

    /// Average pooling with a square `kernel`, `stride` and zero `padding`; padded zeros count
    /// in the divisor (PyTorch's default `count_include_pad=True`), floor mode.
    pub fn avg_pool2d(&self, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
        const OP: &str = "avg_pool2d";
        let dims = nchw(OP, self)?;
        let [_, _, h, w] = dims;
        let oh = pool_out(OP, self.dims(), h, kernel, stride, padding)?;
        let ow = pool_out(OP, self.dims(), w, kernel, stride, padding)?;
        if !self.device().is_cpu() {
            return crate::cuda::pool::avg_pool2d(self, sliding(dims, kernel, stride, padding, [oh, ow]));
        }
        let (ys, xs) =
            (sliding_windows(h, oh, kernel, stride, padding), sliding_windows(w, ow, kernel, stride, padding));
        self.avg_pool_windows(OP, dims, ys, xs)
    }

    /// Adaptive average pooling to `[oh, ow]` (PyTorch's window rule).
    pub fn adaptive_avg_pool2d(&self, oh: usize, ow: usize) -> Result<Tensor> {
        const OP: &str = "adaptive_avg_pool2d";
        let dims = nchw(OP, self)?;
        let [_, _, h, w] = dims;
        if oh == 0 || ow == 0 || h == 0 || w == 0 {
            return shape_err(OP, format!("output {oh}x{ow} and input {:?} must be non-empty", self.dims()));
        }
        if !self.device().is_cpu() {
            return crate::cuda::pool::adaptive_avg_pool2d(self, sliding(dims, 0, 0, 0, [oh, ow]));
        }
        self.avg_pool_windows(OP, dims, adaptive_windows(h, oh), adaptive_windows(w, ow))
    }

    /// Mean over H and W: `[N, C, H, W] -> [N, C]`.
    pub fn global_avg_pool2d(&self) -> Result<Tensor> {
        const OP: &str = "global_avg_pool2d";
        let [n, c, h, w] = nchw(OP, self)?;
        if h == 0 || w == 0 {
            return shape_err(OP, format!("input {:?} has an empty spatial extent", self.dims()));
        }
        self.adaptive_avg_pool2d(1, 1)?.reshape(&[n, c])
    }
}

//! softmax / log_softmax over one dim, and the cross-entropy losses built on the same kernel.
//!
//! The data is viewed as `[outer, n, inner]` around the softmax dim. Each outer block is
//! normalised independently (rayon over blocks); inside a block the `inner` lanes are processed
//! together so that reads stay contiguous when the dim is not the last one.

use crate::autograd::Op;
use crate::layout::{broadcast_shape, norm_dim};
use crate::ops::binary::PAR_THRESHOLD;
use crate::tensor::check_cpu;
use crate::{shape_err, with_float, Error, Float, Result, Tensor};
use rayon::prelude::*;

/// Splits `shape` around dim `d`: (product before, size at `d`, product after).
pub(crate) fn split3(shape: &[usize], d: usize) -> (usize, usize, usize) {
    (shape[..d].iter().product(), shape[d], shape[d + 1..].iter().product())
}

/// Runs `f(block_index, out_block)` over consecutive blocks of `out`, in parallel when the
/// whole buffer is large enough to pay for it.
pub(crate) fn for_blocks<T: Float>(out: &mut [T], block: usize, f: impl Fn(usize, &mut [T]) + Sync + Send) {
    if block == 0 {
        return;
    }
    if out.len() >= PAR_THRESHOLD {
        let min = (4096 / block).max(1);
        out.par_chunks_mut(block).enumerate().with_min_len(min).for_each(|(i, b)| f(i, b));
    } else {
        out.chunks_mut(block).enumerate().for_each(|(i, b)| f(i, b));
    }
}

/// Softmax (or log-softmax) of one `[n, inner]` block.
fn softmax_block<T: Float>(x: &[T], y: &mut [T], n: usize, inner: usize, log: bool) {
    if inner == 1 {
        let m = x.iter().copied().fold(x[0], T::max);
        let mut s = T::ZERO;
        for (yi, &xi) in y.iter_mut().zip(x) {
            let e = (xi - m).exp();
            *yi = e;
            s += e;
        }
        if log {
            // (x - m) - log(s): exact shift first, so large logits keep their precision.
            let ls = s.ln();
            for (yi, &xi) in y.iter_mut().zip(x) {
                *yi = (xi - m) - ls;
            }
        } else {
            let inv = T::ONE / s;
            y.iter_mut().for_each(|v| *v *= inv);
        }
        return;
    }
    let mut m = x[..inner].to_vec();
    for row in x.chunks_exact(inner).skip(1) {
        for (mj, &v) in m.iter_mut().zip(row) {
            *mj = mj.max(v);
        }
    }
    let mut s = vec![T::ZERO; inner];
    for (yr, xr) in y.chunks_exact_mut(inner).zip(x.chunks_exact(inner)) {
        for j in 0..inner {
            let e = (xr[j] - m[j]).exp();
            yr[j] = e;
            s[j] += e;
        }
    }
    if log {
        s.iter_mut().for_each(|v| *v = v.ln());
        for (yr, xr) in y.chunks_exact_mut(inner).zip(x.chunks_exact(inner)) {
            for j in 0..inner {
                yr[j] = (xr[j] - m[j]) - s[j];
            }
        }
    } else {
        s.iter_mut().for_each(|v| *v = T::ONE / *v);
        for yr in y.chunks_exact_mut(inner) {
            for j in 0..inner {
                yr[j] *= s[j];
            }
        }
    }
    debug_assert_eq!(x.len(), n * inner);
}

/// Backward of one block: softmax `gx = y * (g - sum(g*y))`; log-softmax `gx = g - exp(y) * sum(g)`.
fn softmax_block_backward<T: Float>(y: &[T], g: &[T], gx: &mut [T], inner: usize, log: bool) {
    if inner == 1 {
        let s: T = if log { g.iter().copied().sum() } else { g.iter().zip(y).map(|(&a, &b)| a * b).sum() };
        for ((o, &yv), &gv) in gx.iter_mut().zip(y).zip(g) {
            *o = if log { gv - yv.exp() * s } else { yv * (gv - s) };
        }
        return;
    }
    let mut s = vec![T::ZERO; inner];
    for (yr, gr) in y.chunks_exact(inner).zip(g.chunks_exact(inner)) {
        for j in 0..inner {
            s[j] += if log { gr[j] } else { gr[j] * yr[j] };
        }
    }
    for ((o, yr), gr) in gx.chunks_exact_mut(inner).zip(y.chunks_exact(inner)).zip(g.chunks_exact(inner)) {
        for j in 0..inner {
            o[j] = if log { gr[j] - yr[j].exp() * s[j] } else { yr[j] * (gr[j] - s[j]) };
        }
    }
}

struct SoftmaxOp {
    dim: usize,
    log: bool,
}

impl Op for SoftmaxOp {
    fn name(&self) -> &'static str {
        if self.log {
            "log_softmax"
        } else {
            "softmax"
        }
    }
    fn backward(&self, _: &[Tensor], out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (_, n, inner) = split3(out.dims(), self.dim);
        let log = self.log;
        let gx = with_float!(out.dtype(), self.name(), |T| {
            out.with_slice(|y: &[T]| {
                g.with_slice(|g: &[T]| {
                    let mut gx = vec![T::ZERO; y.len()];
                    let b = n * inner;
                    for_blocks(&mut gx, b, |i, o| {
                        softmax_block_backward(&y[i * b..][..b], &g[i * b..][..b], o, inner, log)
                    });
                    Tensor::from_vec(gx, out.dims())
                })
            })??
        })?;
        Ok(vec![Some(gx)])
    }
}

fn softmax_impl(x: &Tensor, dim: isize, log: bool) -> Result<Tensor> {
    let op = if log { "log_softmax" } else { "softmax" };
    let d = norm_dim(op, dim, x.rank())?;
    if !x.device().is_cpu() {
        return crate::cuda::softmax::softmax(x, d, log);
    }
    let (_, n, inner) = split3(x.dims(), d);
    with_float!(x.dtype(), op, |T| {
        let y = x.with_slice(|xs: &[T]| {
            let mut y = vec![T::ZERO; xs.len()];
            let b = n * inner;
            for_blocks(&mut y, b, |i, o| softmax_block(&xs[i * b..][..b], o, n, inner, log));
            y
        })?;
        Ok(Tensor::from_vec_op(y, x.dims(), vec![x.clone()], SoftmaxOp { dim: d, log }))
    })
}

/// Validates `[N, C]` logits for the cross-entropy losses.
fn logits_nc(x: &Tensor, op: &'static str) -> Result<(usize, usize)> {
    if x.rank() != 2 {
        return shape_err(op, format!("logits must be [N, C], got {:?}", x.dims()));
    }
    let (n, c) = (x.dims()[0], x.dims()[1]);
    if n == 0 || c == 0 {
        return shape_err(op, format!("empty logits {:?}", x.dims()));
    }
    Ok((n, c))
}

/// Row-wise log-softmax of contiguous `[n, c]` data.
fn log_softmax_rows<T: Float>(x: &[T], c: usize) -> Vec<T> {
    let mut lp = vec![T::ZERO; x.len()];
    for_blocks(&mut lp, c, |i, o| softmax_block(&x[i * c..][..c], o, c, 1, true));
    lp
}

struct CrossEntropyOp {
    /// Log-probabilities `[N, C]` (contiguous) saved by the forward pass.
    logp: Tensor,
    targets: Vec<usize>,
    smoothing: f64,
}

impl Op for CrossEntropyOp {
    fn name(&self) -> &'static str {
        "cross_entropy"
    }
    fn backward(&self, _: &[Tensor], _: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        // d loss / d logits = g / N * (softmax - q), q = (1-eps) onehot + eps / C.
        let (n, c) = (self.logp.dims()[0], self.logp.dims()[1]);
        let scale = g.to_scalar()? / n as f64;
        let (eps, targets) = (self.smoothing, &self.targets);
        let gx = with_float!(self.logp.dtype(), "cross_entropy", |T| {
            let lp = self.logp.to_vec::<T>()?;
            let mut gx = vec![T::ZERO; lp.len()];
            let (off, on) = (T::from_f64(eps / c as f64), T::from_f64(1.0 - eps + eps / c as f64));
            let s = T::from_f64(scale);
            for_blocks(&mut gx, c, |i, o| {
                for (j, (v, &l)) in o.iter_mut().zip(&lp[i * c..(i + 1) * c]).enumerate() {
                    let q = if j == targets[i] { on } else { off };
                    *v = s * (l.exp() - q);
                }
            });
            Tensor::from_vec(gx, &[n, c])
        })?;
        Ok(vec![Some(gx)])
    }
}

struct SoftCrossEntropyOp {
    logp: Tensor,
    /// Targets expanded to `[N, C]` and made contiguous.
    q: Tensor,
}

impl Op for SoftCrossEntropyOp {
    fn name(&self) -> &'static str {
        "soft_cross_entropy"
    }
    fn backward(&self, inputs: &[Tensor], _: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        // loss = -1/N sum q log p: d/dlogits = g/N (p * sum_c q - q), d/dq = -g/N log p.
        let (n, c) = (self.logp.dims()[0], self.logp.dims()[1]);
        let scale = g.to_scalar()? / n as f64;
        let (x, t) = (&inputs[0], &inputs[1]);
        with_float!(self.logp.dtype(), "soft_cross_entropy", |T| {
            let lp = self.logp.to_vec::<T>()?;
            let q = self.q.to_vec::<T>()?;
            let s = T::from_f64(scale);
            let gx = if x.requires_grad() {
                let mut gx = vec![T::ZERO; lp.len()];
                for_blocks(&mut gx, c, |i, o| {
                    let (lr, qr) = (&lp[i * c..(i + 1) * c], &q[i * c..(i + 1) * c]);
                    let qs: T = qr.iter().copied().sum();
                    for j in 0..c {
                        o[j] = s * (lr[j].exp() * qs - qr[j]);
                    }
                });
                Some(Tensor::from_vec(gx, &[n, c])?)
            } else {
                None
            };
            let gt = if t.requires_grad() {
                let v: Vec<T> = lp.iter().map(|&l| -s * l).collect();
                Some(Tensor::from_vec(v, &[n, c])?.sum_to(t.dims())?)
            } else {
                None
            };
            Ok(vec![gx, gt])
        })
    }
}

impl Tensor {
    /// Softmax along `dim` (max-subtracted, so large logits do not overflow).
    pub fn softmax(&self, dim: isize) -> Result<Tensor> {
        softmax_impl(self, dim, false)
    }

    /// `log(softmax(x))` along `dim`, computed as `x - max - log(sum(exp(x - max)))`.
    pub fn log_softmax(&self, dim: isize) -> Result<Tensor> {
        softmax_impl(self, dim, true)
    }

    /// Mean cross-entropy of logits `[N, C]` against class indices (PyTorch `F.cross_entropy`,
    /// reduction mean): `(1-eps) * nll + eps * mean_c(-log p_c)` per row with
    /// `eps = label_smoothing`. Returns a 0-d tensor.
    pub fn cross_entropy(&self, targets: &[usize], label_smoothing: f64) -> Result<Tensor> {
        let op = "cross_entropy";
        let (n, c) = logits_nc(self, op)?;
        if targets.len() != n {
            return shape_err(op, format!("{} targets for logits {:?}", targets.len(), self.dims()));
        }
        if let Some((i, &t)) = targets.iter().enumerate().find(|(_, &t)| t >= c) {
            return Err(Error::Msg(format!(
                "{op}: target {t} at batch index {i} is out of range for {c} classes (logits {:?})",
                self.dims()
            )));
        }
        if !(0.0..=1.0).contains(&label_smoothing) {
            return Err(Error::Msg(format!("{op}: label_smoothing {label_smoothing} is not in [0, 1]")));
        }
        let eps = label_smoothing;
        if !self.device().is_cpu() {
            return crate::cuda::softmax::cross_entropy(self, targets, eps);
        }
        with_float!(self.dtype(), op, |T| {
            let lp = self.with_slice(|x: &[T]| log_softmax_rows(x, c))?;
            let mut total = 0.0f64;
            for (i, row) in lp.chunks_exact(c).enumerate() {
                let nll = -row[targets[i]].to_f64();
                let smooth = if eps > 0.0 { -row.iter().map(|v| v.to_f64()).sum::<f64>() / c as f64 } else { 0.0 };
                total += (1.0 - eps) * nll + eps * smooth;
            }
            let loss = T::from_f64(total / n as f64);
            let saved =
                CrossEntropyOp { logp: Tensor::from_vec(lp, &[n, c])?, targets: targets.to_vec(), smoothing: eps };
            Ok(Tensor::from_vec_op(vec![loss], &[], vec![self.clone()], saved))
        })
    }

    /// Mean over the batch of `-sum_c q_c log softmax(x)_c` for logits `[N, C]` and target
    /// probabilities `q` broadcastable to `[N, C]` (mixup / cutmix / smoothed targets).
    /// Differentiable in both arguments. Returns a 0-d tensor.
    pub fn soft_cross_entropy(&self, target_probs: &Tensor) -> Result<Tensor> {
        let op = "soft_cross_entropy";
        let (n, c) = logits_nc(self, op)?;
        if target_probs.dtype() != self.dtype() {
            return Err(Error::DTypeMismatch { op, lhs: self.dtype(), rhs: target_probs.dtype() });
        }
        if broadcast_shape(op, target_probs.dims(), &[n, c])? != [n, c] {
            return shape_err(op, format!("targets {:?} do not broadcast to logits {:?}", target_probs.dims(), [n, c]));
        }
        check_cpu(self.device(), op)?;
        let q = target_probs.detach().expand(&[n, c])?.contiguous()?;
        with_float!(self.dtype(), op, |T| {
            let lp = self.with_slice(|x: &[T]| log_softmax_rows(x, c))?;
            let total =
                q.with_slice(|q: &[T]| lp.iter().zip(q).map(|(&l, &p)| -(l.to_f64() * p.to_f64())).sum::<f64>())?;
            let loss = T::from_f64(total / n as f64);
            let saved = SoftCrossEntropyOp { logp: Tensor::from_vec(lp, &[n, c])?, q };
            Ok(Tensor::from_vec_op(vec![loss], &[], vec![self.clone(), target_probs.clone()], saved))
        })
    }
}

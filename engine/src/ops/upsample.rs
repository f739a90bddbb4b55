//! Nearest-neighbour upsampling of NCHW maps and `repeat_interleave` (SparK upsamples its
//! patch masks with it). Both copy whole runs of memory; backward sums the copies back. On a
//! GPU (f32) both run `cuda/pool.rs`'s nearest-upsampling kernels.

use crate::autograd::Op;
use crate::layout::norm_dim;
use crate::ops::softmax::{for_blocks, split3};
use crate::{shape_err, with_float, Result, Tensor};

struct UpsampleNearestOp {
    sh: usize,
    sw: usize,
}

impl Op for UpsampleNearestOp {
    fn name(&self) -> &'static str {
        "upsample_nearest2d"
    }
    fn backward(&self, inputs: &[Tensor], _: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let x = &inputs[0];
        let (h, w) = (x.dims()[2], x.dims()[3]);
        let (sh, sw) = (self.sh, self.sw);
        if !x.device().is_cpu() {
            return Ok(vec![Some(crate::cuda::pool::upsample_nearest2d_backward(g, x.dims(), sh, sw)?)]);
        }
        let ow = w * sw;
        let gx = with_float!(x.dtype(), "upsample_nearest2d", |T| {
            g.with_slice(|g: &[T]| {
                let mut gx = vec![T::ZERO; x.numel()];
                for_blocks(&mut gx, h * w, |p, plane| {
                    let gp = &g[p * h * sh * ow..(p + 1) * h * sh * ow];
                    for (y, row) in plane.chunks_exact_mut(w).enumerate() {
                        for a in 0..sh {
                            let grow = &gp[(y * sh + a) * ow..][..ow];
                            for (v, chunk) in row.iter_mut().zip(grow.chunks_exact(sw)) {
                                *v += chunk.iter().copied().sum::<T>();
                            }
                        }
                    }
                });
                Tensor::from_vec(gx, x.dims())
            })?
        })?;
        Ok(vec![Some(gx)])
    }
}

struct RepeatInterleaveOp {
    dim: usize,
    repeats: usize,
}

impl Op for RepeatInterleaveOp {
    fn name(&self) -> &'static str {
        "repeat_interleave"
    }
    fn backward(&self, inputs: &[Tensor], _: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let x = &inputs[0];
        let (outer, n, inner) = split3(x.dims(), self.dim);
        let r = self.repeats;
        if !x.device().is_cpu() {
            let gx = crate::cuda::pool::repeat_interleave_backward(g, x.dims(), [outer, n, inner], r)?;
            return Ok(vec![Some(gx)]);
        }
        let gx = with_float!(x.dtype(), "repeat_interleave", |T| {
            g.with_slice(|g: &[T]| {
                let mut gx = vec![T::ZERO; x.numel()];
                for_blocks(&mut gx, n * inner, |o, xb| {
                    let gb = &g[o * n * r * inner..(o + 1) * n * r * inner];
                    for (k, dst) in xb.chunks_exact_mut(inner).enumerate() {
                        for t in 0..r {
                            let src = &gb[(k * r + t) * inner..][..inner];
                            dst.iter_mut().zip(src).for_each(|(d, &s)| *d += s);
                        }
                    }
                });
                Tensor::from_vec(gx, x.dims())
            })?
        })?;
        Ok(vec![Some(gx)])
    }
}

impl Tensor {
    /// Nearest upsampling of `[N, C, H, W]` by integer factors: `out[.., y, x] = in[.., y/sh, x/sw]`.
    pub fn upsample_nearest2d(&self, scale_h: usize, scale_w: usize) -> Result<Tensor> {
        let op = "upsample_nearest2d";
        if self.rank() != 4 {
            return shape_err(op, format!("input must be [N, C, H, W], got {:?}", self.dims()));
        }
        if scale_h == 0 || scale_w == 0 {
            return shape_err(op, format!("scales must be >= 1, got ({scale_h}, {scale_w})"));
        }
        if !self.device().is_cpu() {
            let out = crate::cuda::pool::upsample_nearest2d(self, scale_h, scale_w)?;
            return Ok(out.attach_op(vec![self.clone()], UpsampleNearestOp { sh: scale_h, sw: scale_w }));
        }
        let d = self.dims();
        let (h, w) = (d[2], d[3]);
        let (oh, ow) = (h * scale_h, w * scale_w);
        let shape = [d[0], d[1], oh, ow];
        with_float!(self.dtype(), op, |T| {
            let v = self.with_slice(|x: &[T]| {
                let mut out = vec![T::ZERO; x.len() * scale_h * scale_w];
                for_blocks(&mut out, oh * ow, |p, plane| {
                    let xp = &x[p * h * w..(p + 1) * h * w];
                    for (y, rows) in plane.chunks_exact_mut(scale_h * ow).enumerate() {
                        let (first, rest) = rows.split_at_mut(ow);
                        for (chunk, &v) in first.chunks_exact_mut(scale_w).zip(&xp[y * w..(y + 1) * w]) {
                            chunk.fill(v);
                        }
                        for r in rest.chunks_exact_mut(ow) {
                            r.copy_from_slice(first);
                        }
                    }
                });
                out
            })?;
            Ok(Tensor::from_vec_op(v, &shape, vec![self.clone()], UpsampleNearestOp { sh: scale_h, sw: scale_w }))
        })
    }

    /// Repeats each entry along `dim` `repeats` times in place (`[a, b] -> [a, a, b, b]` for 2),
    /// as PyTorch `repeat_interleave(repeats, dim)` with a scalar count.
    pub fn repeat_interleave(&self, repeats: usize, dim: isize) -> Result<Tensor> {
        let op = "repeat_interleave";
        let d = norm_dim(op, dim, self.rank())?;
        let (outer, n, inner) = split3(self.dims(), d);
        let mut shape = self.shape();
        shape[d] = n * repeats;
        if !self.device().is_cpu() {
            let out = crate::cuda::pool::repeat_interleave(self, [outer, n, inner], repeats, &shape)?;
            return Ok(out.attach_op(vec![self.clone()], RepeatInterleaveOp { dim: d, repeats }));
        }
        with_float!(self.dtype(), op, |T| {
            let v = self.with_slice(|x: &[T]| {
                let mut out = vec![T::ZERO; x.len() * repeats];
                for_blocks(&mut out, n * repeats * inner, |o, ob| {
                    let xb = &x[o * n * inner..(o + 1) * n * inner];
                    for (dst, src) in ob.chunks_exact_mut(repeats * inner).zip(xb.chunks_exact(inner.max(1))) {
                        for r in dst.chunks_exact_mut(inner) {
                            r.copy_from_slice(src);
                        }
                    }
                });
                out
            })?;
            Ok(Tensor::from_vec_op(v, &shape, vec![self.clone()], RepeatInterleaveOp { dim: d, repeats }))
        })
    }
}

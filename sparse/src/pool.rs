//! Pooling over active sites with SparK's semantics: the dense pool of the zero-filled input,
//! then the output multiplied by the output mask.
//!
//! - Max pool: PyTorch pads with -inf, so padding never wins; an in-bounds inactive site holds
//!   0 and does compete (an all-negative window next to a masked site gives 0). Ties go to the
//!   first position in row-major window order, as PyTorch's CPU kernel (strict `>`).
//! - Avg pool: `count_include_pad=True` (PyTorch's default, SparK's): the divisor is always
//!   kh*kw in floor mode; inactive sites add 0.
//! - Global average: the sum over active sites divided by their number (SparK issue #54), zero
//!   for an image without active sites.

use crate::{KernelGeom, SparseContext, SparseTensor};
use rayon::prelude::*;
use spark_engine::{with_float, Error, Op, Result, Tensor};
use std::sync::Arc;

fn check_pool(op: &'static str, kernel: usize, stride: usize, padding: usize) -> Result<KernelGeom> {
    if kernel == 0 || stride == 0 || 2 * padding > kernel {
        return Err(Error::Shape {
            op,
            msg: format!(
                "kernel {kernel}, stride {stride}, padding {padding}: need kernel, stride >= 1 and padding <= kernel/2"
            ),
        });
    }
    Ok(KernelGeom::pool(kernel, stride, padding))
}

/// Sparse max pool (square window, dilation 1). Output sites come from `ctx` as for a conv.
pub fn sparse_max_pool2d(
    x: &SparseTensor,
    kernel: usize,
    stride: usize,
    padding: usize,
    ctx: &mut SparseContext,
) -> Result<SparseTensor> {
    let op = "sparse_max_pool2d";
    let geom = check_pool(op, kernel, stride, padding)?;
    let out_set = ctx.output_set(&x.active, geom)?;
    let map = ctx.kernel_map(&x.active, &out_set, geom)?;
    let c = x.channels();
    let (n_out, kv) = (out_set.len(), geom.volume());
    let (ih, iw) = (x.active.h() as isize, x.active.w() as isize);
    let nbr = map.neighbours();
    let coords = out_set.coords();
    let features = with_float!(x.features.dtype(), op, |T| {
        let (y, arg) = x.features.with_slice(|xs: &[T]| {
            let mut y = vec![<T>::ZERO; n_out * c];
            let mut arg = vec![-1i32; n_out * c];
            if c > 0 {
                y.par_chunks_mut(c).zip(arg.par_chunks_mut(c)).enumerate().with_min_len(16).for_each(
                    |(o, (yr, ar))| {
                        let [_, oy, ox] = coords[o];
                        let mut best: Vec<Option<T>> = vec![None; c];
                        for ky in 0..kernel {
                            let iy = geom.input_coord(0, oy, ky);
                            if iy < 0 || iy >= ih {
                                continue;
                            }
                            for kx in 0..kernel {
                                let ix = geom.input_coord(1, ox, kx);
                                if ix < 0 || ix >= iw {
                                    continue;
                                }
                                let i = nbr[o * kv + ky * kernel + kx];
                                for ch in 0..c {
                                    let v = if i >= 0 { xs[i as usize * c + ch] } else { <T>::ZERO };
                                    // Strict `>` keeps the first maximum; NaN propagates as in PyTorch.
                                    let take = match best[ch] {
                                        None => true,
                                        Some(b) => v > b || v.to_f64().is_nan(),
                                    };
                                    if take {
                                        best[ch] = Some(v);
                                        ar[ch] = i;
                                    }
                                }
                            }
                        }
                        for (v, b) in yr.iter_mut().zip(&best) {
                            *v = b.unwrap_or(<T>::ZERO);
                        }
                    },
                );
            }
            (y, arg)
        })?;
        Ok(Tensor::from_vec_op(
            y,
            &[n_out, c],
            vec![x.features.clone()],
            MaxPoolOp { arg: Arc::new(arg), n_in: x.active.len(), c },
        ))
    })?;
    Ok(SparseTensor { features, active: out_set })
}

struct MaxPoolOp {
    /// `[n_out, C]` input row of each maximum, -1 when it was an inactive (zero) site.
    arg: Arc<Vec<i32>>,
    n_in: usize,
    c: usize,
}

impl Op for MaxPoolOp {
    fn name(&self) -> &'static str {
        "sparse_max_pool2d"
    }
    fn backward(&self, _inputs: &[Tensor], _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let c = self.c;
        with_float!(g.dtype(), "sparse_max_pool2d backward", |T| {
            let gs = g.contiguous()?.to_vec::<T>()?;
            let mut dx = vec![<T>::ZERO; self.n_in * c];
            // Overlapping windows can pick the same input: accumulate serially (memory-bound).
            for (idx, (&a, &gv)) in self.arg.iter().zip(&gs).enumerate() {
                if a >= 0 {
                    dx[a as usize * c + idx % c] += gv;
                }
            }
            Ok(vec![Some(Tensor::from_vec(dx, &[self.n_in, c])?)])
        })
    }
}

/// Sparse average pool (square window, `count_include_pad=True`). Output sites from `ctx`.
pub fn sparse_avg_pool2d(
    x: &SparseTensor,
    kernel: usize,
    stride: usize,
    padding: usize,
    ctx: &mut SparseContext,
) -> Result<SparseTensor> {
    let op = "sparse_avg_pool2d";
    let geom = check_pool(op, kernel, stride, padding)?;
    let out_set = ctx.output_set(&x.active, geom)?;
    let map = ctx.kernel_map(&x.active, &out_set, geom)?;
    let c = x.channels();
    let (n_out, kv) = (out_set.len(), geom.volume());
    let nbr = map.neighbours();
    let features = with_float!(x.features.dtype(), op, |T| {
        let inv = <T>::from_f64(1.0 / kv as f64);
        let y = x.features.with_slice(|xs: &[T]| {
            let mut y = vec![<T>::ZERO; n_out * c];
            if c > 0 {
                y.par_chunks_mut(c).enumerate().with_min_len(16).for_each(|(o, yr)| {
                    for k in 0..kv {
                        let i = nbr[o * kv + k];
                        if i >= 0 {
                            for (v, &xv) in yr.iter_mut().zip(&xs[i as usize * c..(i as usize + 1) * c]) {
                                *v += xv;
                            }
                        }
                    }
                    yr.iter_mut().for_each(|v| *v *= inv);
                });
            }
            y
        })?;
        Ok(Tensor::from_vec_op(y, &[n_out, c], vec![x.features.clone()], AvgPoolOp { map: map.clone(), c }))
    })?;
    Ok(SparseTensor { features, active: out_set })
}

struct AvgPoolOp {
    map: Arc<crate::KernelMap>,
    c: usize,
}

impl Op for AvgPoolOp {
    fn name(&self) -> &'static str {
        "sparse_avg_pool2d"
    }
    fn backward(&self, _inputs: &[Tensor], _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (c, kv) = (self.c, self.map.volume());
        let rev = self.map.reverse();
        with_float!(g.dtype(), "sparse_avg_pool2d backward", |T| {
            let inv = <T>::from_f64(1.0 / kv as f64);
            let gs = g.contiguous()?.to_vec::<T>()?;
            let mut dx = vec![<T>::ZERO; self.map.n_in() * c];
            if c > 0 {
                dx.par_chunks_mut(c).enumerate().with_min_len(16).for_each(|(i, row)| {
                    for k in 0..kv {
                        let o = rev[i * kv + k];
                        if o >= 0 {
                            for (v, &gv) in row.iter_mut().zip(&gs[o as usize * c..(o as usize + 1) * c]) {
                                *v += gv * inv;
                            }
                        }
                    }
                });
            }
            Ok(vec![Some(Tensor::from_vec(dx, &[self.map.n_in(), c])?)])
        })
    }
}

/// `[B, C]`: per image, the mean of the features over its active sites (zeros when it has none).
pub fn sparse_global_avg_pool(x: &SparseTensor) -> Result<Tensor> {
    let op = "sparse_global_avg_pool";
    let (batch, c) = (x.active.batch(), x.channels());
    let active = x.active.clone();
    with_float!(x.features.dtype(), op, |T| {
        let y = x.features.with_slice(|xs: &[T]| {
            let mut y = vec![<T>::ZERO; batch * c];
            for b in 0..batch {
                let rows = active.image_rows(b);
                let n = rows.len();
                if n == 0 {
                    continue;
                }
                let yr = &mut y[b * c..(b + 1) * c];
                for r in rows {
                    for (v, &xv) in yr.iter_mut().zip(&xs[r * c..(r + 1) * c]) {
                        *v += xv;
                    }
                }
                let inv = <T>::from_f64(1.0 / n as f64);
                yr.iter_mut().for_each(|v| *v *= inv);
            }
            y
        })?;
        Ok(Tensor::from_vec_op(y, &[batch, c], vec![x.features.clone()], GlobalAvgOp { active, c }))
    })
}

struct GlobalAvgOp {
    active: Arc<crate::ActiveSet>,
    c: usize,
}

impl Op for GlobalAvgOp {
    fn name(&self) -> &'static str {
        "sparse_global_avg_pool"
    }
    fn backward(&self, _inputs: &[Tensor], _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let c = self.c;
        with_float!(g.dtype(), "sparse_global_avg_pool backward", |T| {
            let gs = g.contiguous()?.to_vec::<T>()?;
            let mut dx = vec![<T>::ZERO; self.active.len() * c];
            for b in 0..self.active.batch() {
                let rows = self.active.image_rows(b);
                if rows.is_empty() {
                    continue;
                }
                let inv = <T>::from_f64(1.0 / rows.len() as f64);
                for r in rows {
                    for (v, &gv) in dx[r * c..(r + 1) * c].iter_mut().zip(&gs[b * c..(b + 1) * c]) {
                        *v = gv * inv;
                    }
                }
            }
            Ok(vec![Some(Tensor::from_vec(dx, &[self.active.len(), c])?)])
        })
    }
}

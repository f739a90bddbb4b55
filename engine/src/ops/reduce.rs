//! Reductions over axes: sum, mean, max, var; and `sum_to` (the adjoint of broadcasting).

use crate::autograd::Op;
use crate::layout::norm_dim;
use crate::{shape_err, with_float, Float, Result, Tensor};
use rayon::prelude::*;

/// Reduced axes moved last, so the kernel reduces contiguous rows of length `inner`.
struct Plan {
    /// Input permuted (kept dims first, reduced dims last) and made contiguous.
    rows: Tensor,
    outer: usize,
    inner: usize,
    /// Output shape with keepdim.
    keep_shape: Vec<usize>,
    /// Output shape as requested.
    out_shape: Vec<usize>,
}

fn plan(x: &Tensor, dims: &[isize], keepdim: bool, op: &'static str) -> Result<Plan> {
    let r = x.rank();
    let mut red = vec![false; r];
    for &d in dims {
        let d = norm_dim(op, d, r)?;
        if red[d] {
            return shape_err(op, format!("dim {d} repeated in {dims:?}"));
        }
        red[d] = true;
    }
    let kept: Vec<usize> = (0..r).filter(|&d| !red[d]).collect();
    let reduced: Vec<usize> = (0..r).filter(|&d| red[d]).collect();
    let perm: Vec<usize> = kept.iter().chain(&reduced).copied().collect();
    let rows = x.detach().permute(&perm)?.contiguous()?;
    let outer = kept.iter().map(|&d| x.dims()[d]).product();
    let inner = reduced.iter().map(|&d| x.dims()[d]).product();
    let keep_shape: Vec<usize> = (0..r).map(|d| if red[d] { 1 } else { x.dims()[d] }).collect();
    let out_shape = if keepdim { keep_shape.clone() } else { kept.iter().map(|&d| x.dims()[d]).collect() };
    Ok(Plan { rows, outer, inner, keep_shape, out_shape })
}

fn reduce_rows<T: Float>(p: &Plan, f: impl Fn(&[T]) -> T + Sync) -> Result<Vec<T>> {
    p.rows.with_slice(|s: &[T]| {
        if p.inner == 0 {
            return vec![f(&[]); p.outer];
        }
        if p.outer * p.inner >= 1 << 16 && p.outer > 1 {
            s.par_chunks(p.inner).map(&f).collect()
        } else {
            s.chunks(p.inner).map(&f).collect()
        }
    })
}

/// Sum with pairwise-ish accumulation in f64 for f32 rows (keeps large reductions accurate).
fn sum_row<T: Float>(r: &[T]) -> T {
    let mut acc = 0.0f64;
    for &v in r {
        acc += v.to_f64();
    }
    T::from_f64(acc)
}

/// Elements per parallel task of `sum_of_squares` (fixed, so the sum does not depend on threads).
const SQUARES_CHUNK: usize = 1 << 15;

/// Sum of squares in f64 with eight independent accumulators (so it vectorises).
fn sum_squares<T: Float>(s: &[T]) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = s.chunks_exact(8);
    let rest: f64 = chunks.remainder().iter().map(|x| x.to_f64() * x.to_f64()).sum();
    for c in chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += x.to_f64() * x.to_f64();
        }
    }
    acc.iter().sum::<f64>() + rest
}

struct SumOp {
    keep_shape: Vec<usize>,
    scale: f64,
}
impl Op for SumOp {
    fn name(&self) -> &'static str {
        "sum"
    }
    fn backward(&self, inputs: &[Tensor], _: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let g = g.reshape(&self.keep_shape)?;
        let g = if self.scale != 1.0 { g.mul_scalar(self.scale)? } else { g };
        Ok(vec![Some(g.expand(inputs[0].dims())?.contiguous()?)])
    }
}

struct MaxOp {
    keep_shape: Vec<usize>,
}
impl Op for MaxOp {
    fn name(&self) -> &'static str {
        "max"
    }
    fn backward(&self, inputs: &[Tensor], out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        // Gradient split evenly between tied maxima (as PyTorch's amax).
        let x = &inputs[0];
        let hit = x.eq_mask(&out.reshape(&self.keep_shape)?)?;
        let dims: Vec<isize> =
            (0..x.rank()).filter(|&d| self.keep_shape[d] == 1 && x.dims()[d] != 1).map(|d| d as isize).collect();
        let count = hit.sum(&dims, true)?;
        let g = g.reshape(&self.keep_shape)?;
        Ok(vec![Some(hit.mul(&g.div(&count)?)?)])
    }
}

impl Tensor {
    /// Sum over `dims` (negative dims count from the end).
    pub fn sum(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        let p = plan(self, dims, keepdim, "sum")?;
        if !self.device().is_cpu() {
            let out = crate::cuda::ops::reduce_rows(&p.rows, p.outer, p.inner, false, &p.out_shape)?;
            return Ok(out.attach_op(vec![self.clone()], SumOp { keep_shape: p.keep_shape, scale: 1.0 }));
        }
        let out = with_float!(self.dtype(), "sum", |T| reduce_rows::<T>(&p, sum_row)
            .map(|v| Tensor::from_vec(v, &p.out_shape)))??;
        Ok(out.attach_op(vec![self.clone()], SumOp { keep_shape: p.keep_shape, scale: 1.0 }))
    }

    pub fn mean(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        let p = plan(self, dims, keepdim, "mean")?;
        let n = p.inner;
        if !self.device().is_cpu() {
            let sum = crate::cuda::ops::reduce_rows(&p.rows, p.outer, p.inner, false, &p.out_shape)?;
            let out = crate::cuda::ops::unary(&sum, None, Some((1.0 / n as f64, 0.0)), "mean")?;
            return Ok(out.attach_op(vec![self.clone()], SumOp { keep_shape: p.keep_shape, scale: 1.0 / n as f64 }));
        }
        let out = with_float!(self.dtype(), "mean", |T| reduce_rows::<T>(&p, |r| T::from_f64(
            sum_row::<T>(r).to_f64() / n as f64
        ))
        .map(|v| Tensor::from_vec(v, &p.out_shape)))??;
        Ok(out.attach_op(vec![self.clone()], SumOp { keep_shape: p.keep_shape, scale: 1.0 / n as f64 }))
    }

    pub fn max(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        let p = plan(self, dims, keepdim, "max")?;
        if p.inner == 0 {
            return shape_err("max", format!("max over an empty dimension of {:?}", self.dims()));
        }
        if !self.device().is_cpu() {
            let out = crate::cuda::ops::reduce_rows(&p.rows, p.outer, p.inner, true, &p.out_shape)?;
            return Ok(out.attach_op(vec![self.clone()], MaxOp { keep_shape: p.keep_shape }));
        }
        let out = with_float!(self.dtype(), "max", |T| reduce_rows::<T>(&p, |r| r
            .iter()
            .copied()
            .fold(r[0], |a, b| if b > a { b } else { a }))
        .map(|v| Tensor::from_vec(v, &p.out_shape)))??;
        Ok(out.attach_op(vec![self.clone()], MaxOp { keep_shape: p.keep_shape }))
    }

    /// Variance over `dims`; `unbiased` divides by n-1 (torch.var default) else by n.
    pub fn var(&self, dims: &[isize], keepdim: bool, unbiased: bool) -> Result<Tensor> {
        let mean = self.mean(dims, true)?;
        let d = self.sub(&mean)?;
        let n: usize = {
            let p = plan(self, dims, true, "var")?;
            p.inner
        };
        let denom = if unbiased { n.saturating_sub(1) } else { n } as f64;
        d.sqr()?.sum(dims, keepdim)?.div_scalar(denom)
    }

    /// `sum x^2` over every element, in f64 (the global gradient norm): on the host in fixed
    /// chunks added in order, on CUDA by the two-pass kernel; deterministic either way.
    pub fn sum_of_squares(&self) -> Result<f64> {
        if !self.device().is_cpu() {
            return crate::cuda::ops::sum_of_squares(self);
        }
        with_float!(self.dtype(), "sum_of_squares", |T| self.with_slice::<T, f64>(|s| {
            let parts: Vec<f64> = s.par_chunks(SQUARES_CHUNK).map(sum_squares).collect();
            parts.iter().sum::<f64>()
        }))
    }

    /// Sum of all elements (0-d tensor).
    pub fn sum_all(&self) -> Result<Tensor> {
        let dims: Vec<isize> = (0..self.rank() as isize).collect();
        self.sum(&dims, false)
    }
    pub fn mean_all(&self) -> Result<Tensor> {
        let dims: Vec<isize> = (0..self.rank() as isize).collect();
        self.mean(&dims, false)
    }

    /// Sums broadcast dimensions away so the result has `shape` (the adjoint of `expand`).
    pub fn sum_to(&self, shape: &[usize]) -> Result<Tensor> {
        if self.dims() == shape {
            return Ok(self.clone());
        }
        if shape.len() > self.rank() {
            return shape_err("sum_to", format!("cannot sum {:?} to the larger rank {shape:?}", self.dims()));
        }
        let lead = self.rank() - shape.len();
        let mut dims: Vec<isize> = (0..lead as isize).collect();
        for (i, &s) in shape.iter().enumerate() {
            if s == 1 && self.dims()[lead + i] != 1 {
                dims.push((lead + i) as isize);
            } else if s != self.dims()[lead + i] {
                return shape_err("sum_to", format!("cannot sum {:?} to {shape:?}", self.dims()));
            }
        }
        self.sum(&dims, true)?.reshape(shape)
    }
}

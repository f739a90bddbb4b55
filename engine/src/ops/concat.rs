//! Concatenation along an existing dim (`cat`) or a new one (`stack`).

use crate::autograd::Op;
use crate::layout::norm_dim;
use crate::{shape_err, with_float, Error, Result, Tensor};

struct CatOp {
    dim: usize,
    sizes: Vec<usize>,
}
impl Op for CatOp {
    fn name(&self) -> &'static str {
        "cat"
    }
    fn backward(&self, _: &[Tensor], _: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let mut start = 0;
        let mut out = Vec::with_capacity(self.sizes.len());
        for &s in &self.sizes {
            out.push(Some(g.narrow(self.dim as isize, start, s)?.contiguous()?));
            start += s;
        }
        Ok(out)
    }
}

impl Tensor {
    /// Concatenates along `dim`; all other dims must agree.
    pub fn cat(ts: &[Tensor], dim: isize) -> Result<Tensor> {
        let Some(first) = ts.first() else {
            return shape_err("cat", "no tensors to concatenate");
        };
        let r = first.rank();
        let d = norm_dim("cat", dim, r)?;
        for t in ts {
            if t.rank() != r || t.dims().iter().enumerate().any(|(i, &s)| i != d && s != first.dims()[i]) {
                return shape_err(
                    "cat",
                    format!("shape {:?} does not match {:?} outside dim {d}", t.dims(), first.dims()),
                );
            }
            if t.dtype() != first.dtype() {
                return Err(Error::DTypeMismatch { op: "cat", lhs: first.dtype(), rhs: t.dtype() });
            }
        }
        let sizes: Vec<usize> = ts.iter().map(|t| t.dims()[d]).collect();
        let mut shape = first.shape();
        shape[d] = sizes.iter().sum();
        let outer: usize = first.dims()[..d].iter().product();
        let inner: usize = first.dims()[d + 1..].iter().product();
        let out = with_float!(first.dtype(), "cat", |T| {
            let parts: Vec<Vec<T>> = ts.iter().map(|t| t.to_vec::<T>()).collect::<Result<_>>()?;
            let mut v = Vec::with_capacity(shape.iter().product());
            for o in 0..outer {
                for (p, &s) in parts.iter().zip(&sizes) {
                    v.extend_from_slice(&p[o * s * inner..(o + 1) * s * inner]);
                }
            }
            Tensor::from_vec(v, &shape)
        })?;
        Ok(out.attach_op(ts.to_vec(), CatOp { dim: d, sizes }))
    }

    /// Stacks equal-shaped tensors along a new dim.
    pub fn stack(ts: &[Tensor], dim: isize) -> Result<Tensor> {
        let Some(first) = ts.first() else {
            return shape_err("stack", "no tensors to stack");
        };
        let d = norm_dim("stack", dim, first.rank() + 1)?;
        let parts: Vec<Tensor> = ts.iter().map(|t| t.unsqueeze(d as isize)).collect::<Result<_>>()?;
        Tensor::cat(&parts, d as isize)
    }
}

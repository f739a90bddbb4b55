//! Views: reshape, permute/transpose, narrow, expand, squeeze/unsqueeze. They share storage
//! where the layout allows and copy otherwise; each records its inverse as backward.

use crate::autograd::Op;
use crate::layout::{norm_dim, numel, Layout};
use crate::{shape_err, Result, Tensor};

struct ReshapeOp {
    in_shape: Vec<usize>,
}
impl Op for ReshapeOp {
    fn name(&self) -> &'static str {
        "reshape"
    }
    fn backward(&self, _: &[Tensor], _: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.reshape(&self.in_shape)?)])
    }
}

struct PermuteOp {
    dims: Vec<usize>,
}
impl Op for PermuteOp {
    fn name(&self) -> &'static str {
        "permute"
    }
    fn backward(&self, _: &[Tensor], _: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let mut inv = vec![0; self.dims.len()];
        for (i, &d) in self.dims.iter().enumerate() {
            inv[d] = i;
        }
        Ok(vec![Some(g.permute(&inv)?)])
    }
}

struct NarrowOp {
    dim: usize,
    start: usize,
    in_shape: Vec<usize>,
}
impl Op for NarrowOp {
    fn name(&self) -> &'static str {
        "narrow"
    }
    fn backward(&self, _: &[Tensor], _: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        // Zero-pad the gradient back to the input's extent along `dim`.
        let len = g.dims()[self.dim];
        let total = self.in_shape[self.dim];
        let mut parts = Vec::new();
        let pad = |n: usize| {
            let mut s = self.in_shape.clone();
            s[self.dim] = n;
            Tensor::zeros(&s, g.dtype(), g.device())
        };
        if self.start > 0 {
            parts.push(pad(self.start)?);
        }
        parts.push(g.clone());
        if self.start + len < total {
            parts.push(pad(total - self.start - len)?);
        }
        Ok(vec![Some(if parts.len() == 1 { g.clone() } else { Tensor::cat(&parts, self.dim as isize)? })])
    }
}

struct ExpandOp {
    in_shape: Vec<usize>,
}
impl Op for ExpandOp {
    fn name(&self) -> &'static str {
        "expand"
    }
    fn backward(&self, _: &[Tensor], _: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.sum_to(&self.in_shape)?)])
    }
}

impl Tensor {
    /// Same elements, new shape. One dimension may be `usize::MAX` to be inferred... use
    /// `reshape_infer` for that. Copies only when the view is not contiguous.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if numel(shape) != self.numel() {
            return shape_err(
                "reshape",
                format!("cannot reshape {:?} ({} elements) to {shape:?}", self.dims(), self.numel()),
            );
        }
        if shape == self.dims() {
            return Ok(self.clone());
        }
        let src = self.contiguous()?;
        let layout = Layout {
            shape: shape.to_vec(),
            strides: crate::layout::contiguous_strides(shape),
            offset: src.layout().offset,
        };
        Ok(src.view_op(layout, ReshapeOp { in_shape: self.shape() }))
    }

    /// Reshape where one entry of `shape` may be -1.
    pub fn reshape_infer(&self, shape: &[isize]) -> Result<Tensor> {
        let known: usize = shape.iter().filter(|&&d| d >= 0).map(|&d| d as usize).product();
        let n_infer = shape.iter().filter(|&&d| d < 0).count();
        if n_infer > 1 || (n_infer == 1 && (known == 0 || !self.numel().is_multiple_of(known))) {
            return shape_err("reshape", format!("cannot reshape {:?} to {shape:?}", self.dims()));
        }
        let s: Vec<usize> =
            shape.iter().map(|&d| if d < 0 { self.numel() / known.max(1) } else { d as usize }).collect();
        self.reshape(&s)
    }

    pub fn flatten_from(&self, dim: usize) -> Result<Tensor> {
        let mut s = self.dims()[..dim.min(self.rank())].to_vec();
        s.push(self.dims()[dim.min(self.rank())..].iter().product());
        self.reshape(&s)
    }

    pub fn permute(&self, dims: &[usize]) -> Result<Tensor> {
        let layout = self.layout().permute(dims)?;
        Ok(self.view_op(layout, PermuteOp { dims: dims.to_vec() }))
    }

    pub fn transpose(&self, d0: isize, d1: isize) -> Result<Tensor> {
        let r = self.rank();
        let (a, b) = (norm_dim("transpose", d0, r)?, norm_dim("transpose", d1, r)?);
        let mut dims: Vec<usize> = (0..r).collect();
        dims.swap(a, b);
        self.permute(&dims)
    }

    /// Matrix transpose of the last two dims.
    pub fn t(&self) -> Result<Tensor> {
        self.transpose(-2, -1)
    }

    pub fn narrow(&self, dim: isize, start: usize, len: usize) -> Result<Tensor> {
        let d = norm_dim("narrow", dim, self.rank())?;
        let layout = self.layout().narrow(d, start, len)?;
        Ok(self.view_op(layout, NarrowOp { dim: d, start, in_shape: self.shape() }))
    }

    /// Broadcasts to `shape` without copying (stride 0 on the new dims).
    pub fn expand(&self, shape: &[usize]) -> Result<Tensor> {
        if shape == self.dims() {
            return Ok(self.clone());
        }
        let layout = self.layout().expand(shape)?;
        Ok(self.view_op(layout, ExpandOp { in_shape: self.shape() }))
    }

    pub fn unsqueeze(&self, dim: isize) -> Result<Tensor> {
        let d = norm_dim("unsqueeze", dim, self.rank() + 1)?;
        let mut s = self.shape();
        s.insert(d, 1);
        self.reshape(&s)
    }

    pub fn squeeze(&self, dim: isize) -> Result<Tensor> {
        let d = norm_dim("squeeze", dim, self.rank())?;
        if self.dims()[d] != 1 {
            return shape_err("squeeze", format!("dim {d} of {:?} is not 1", self.dims()));
        }
        let mut s = self.shape();
        s.remove(d);
        self.reshape(&s)
    }
}

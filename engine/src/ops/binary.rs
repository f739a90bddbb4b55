//! Broadcasting elementwise binary ops (add, sub, mul, div, maximum, minimum) and scalar forms.

use crate::autograd::Op;
use crate::layout::{broadcast_shape, Layout};
use crate::storage::Storage;
use crate::tensor::check_cpu;
use crate::{with_float, Error, Float, Result, Tensor};
use rayon::prelude::*;

/// Work below this many elements runs on one thread (rayon overhead dominates).
pub(crate) const PAR_THRESHOLD: usize = 1 << 15;

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum BinKind {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
}

impl BinKind {
    fn name(self) -> &'static str {
        match self {
            BinKind::Add => "add",
            BinKind::Sub => "sub",
            BinKind::Mul => "mul",
            BinKind::Div => "div",
            BinKind::Max => "maximum",
            BinKind::Min => "minimum",
        }
    }
    #[inline(always)]
    fn apply<T: Float>(self, a: T, b: T) -> T {
        match self {
            BinKind::Add => a + b,
            BinKind::Sub => a - b,
            BinKind::Mul => a * b,
            BinKind::Div => a / b,
            BinKind::Max => a.max(b),
            BinKind::Min => a.min(b),
        }
    }
}

fn binary_kernel<T: Float>(kind: BinKind, a: &[T], la: &Layout, b: &[T], lb: &Layout) -> Vec<T> {
    let n = la.numel();
    macro_rules! run {
        ($f:expr) => {{
            let f = $f;
            if la.is_contiguous() && lb.is_contiguous() {
                let (a, b) = (&a[la.offset..la.offset + n], &b[lb.offset..lb.offset + n]);
                if n >= PAR_THRESHOLD {
                    a.par_iter().zip(b.par_iter()).map(|(&x, &y)| f(x, y)).collect()
                } else {
                    a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect()
                }
            } else {
                la.offsets().zip(lb.offsets()).map(|(i, j)| f(a[i], b[j])).collect()
            }
        }};
    }
    match kind {
        BinKind::Add => run!(|x: T, y: T| x + y),
        BinKind::Sub => run!(|x: T, y: T| x - y),
        BinKind::Mul => run!(|x: T, y: T| x * y),
        BinKind::Div => run!(|x: T, y: T| x / y),
        k => run!(move |x: T, y: T| k.apply(x, y)),
    }
}

struct BinaryOp {
    kind: BinKind,
}

impl Op for BinaryOp {
    fn name(&self) -> &'static str {
        self.kind.name()
    }
    fn backward(&self, inputs: &[Tensor], out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (a, b) = (&inputs[0], &inputs[1]);
        let (ga, gb) = match self.kind {
            BinKind::Add => (g.clone(), g.clone()),
            BinKind::Sub => (g.clone(), g.neg()?),
            BinKind::Mul => (g.mul(b)?, g.mul(a)?),
            BinKind::Div => (g.div(b)?, g.mul(out)?.div(b)?.neg()?),
            BinKind::Max | BinKind::Min => {
                // The gradient goes to the operand that was selected (to `a` on ties).
                let a_sel = a.eq_mask(out)?;
                let b_sel = a_sel.neg()?.add_scalar(1.0)?;
                (g.mul(&a_sel)?, g.mul(&b_sel)?)
            }
        };
        Ok(vec![Some(ga.sum_to(a.dims())?), Some(gb.sum_to(b.dims())?)])
    }
}

pub(crate) fn binary(kind: BinKind, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let op = kind.name();
    if a.device() != b.device() {
        return Err(Error::DeviceMismatch { op, lhs: a.device(), rhs: b.device() });
    }
    if a.dtype() != b.dtype() {
        return Err(Error::DTypeMismatch { op, lhs: a.dtype(), rhs: b.dtype() });
    }
    check_cpu(a.device(), op)?;
    let shape = broadcast_shape(op, a.dims(), b.dims())?;
    let la = a.layout().expand(&shape)?;
    let lb = b.layout().expand(&shape)?;
    let (sa, sb) = (a.storage(), b.storage());
    let out = with_float!(a.dtype(), op, |T| {
        let va = T::slice(sa.cpu()).expect("dtype checked");
        let vb = T::slice(sb.cpu()).expect("dtype checked");
        Ok(Storage::Cpu(T::into_storage(binary_kernel::<T>(kind, va, &la, vb, &lb))))
    })?;
    drop((sa, sb));
    Ok(Tensor::from_op(out, &shape, vec![a.clone(), b.clone()], BinaryOp { kind }))
}

impl Tensor {
    pub fn add(&self, rhs: &Tensor) -> Result<Tensor> {
        binary(BinKind::Add, self, rhs)
    }
    pub fn sub(&self, rhs: &Tensor) -> Result<Tensor> {
        binary(BinKind::Sub, self, rhs)
    }
    pub fn mul(&self, rhs: &Tensor) -> Result<Tensor> {
        binary(BinKind::Mul, self, rhs)
    }
    pub fn div(&self, rhs: &Tensor) -> Result<Tensor> {
        binary(BinKind::Div, self, rhs)
    }
    /// Elementwise maximum (gradient to the larger operand, to `self` on ties).
    pub fn maximum(&self, rhs: &Tensor) -> Result<Tensor> {
        binary(BinKind::Max, self, rhs)
    }
    pub fn minimum(&self, rhs: &Tensor) -> Result<Tensor> {
        binary(BinKind::Min, self, rhs)
    }
    fn scalar_like(&self, v: f64) -> Result<Tensor> {
        Tensor::scalar(v, self.dtype(), self.device())
    }
    pub fn add_scalar(&self, v: f64) -> Result<Tensor> {
        self.affine(1.0, v)
    }
    pub fn mul_scalar(&self, v: f64) -> Result<Tensor> {
        self.affine(v, 0.0)
    }
    pub fn div_scalar(&self, v: f64) -> Result<Tensor> {
        self.affine(1.0 / v, 0.0)
    }
    /// `v - self`.
    pub fn rsub_scalar(&self, v: f64) -> Result<Tensor> {
        self.affine(-1.0, v)
    }
    pub fn maximum_scalar(&self, v: f64) -> Result<Tensor> {
        self.maximum(&self.scalar_like(v)?)
    }
    pub fn minimum_scalar(&self, v: f64) -> Result<Tensor> {
        self.minimum(&self.scalar_like(v)?)
    }
    /// 1.0 where `self == other` (broadcast), else 0.0; not differentiable.
    pub fn eq_mask(&self, other: &Tensor) -> Result<Tensor> {
        compare(self, other, "eq_mask", |a, b| a == b)
    }
    /// 1.0 where `self > other` (broadcast), else 0.0; not differentiable.
    pub fn gt_mask(&self, other: &Tensor) -> Result<Tensor> {
        compare(self, other, "gt_mask", |a, b| a > b)
    }
}

fn compare(a: &Tensor, b: &Tensor, op: &'static str, f: fn(f64, f64) -> bool) -> Result<Tensor> {
    let shape = broadcast_shape(op, a.dims(), b.dims())?;
    let (a, b) = (a.detach().expand(&shape)?, b.detach().to_dtype(a.dtype())?.expand(&shape)?);
    with_float!(a.dtype(), op, |T| {
        let va = a.to_vec::<T>()?;
        let vb = b.to_vec::<T>()?;
        let v: Vec<T> =
            va.iter().zip(&vb).map(|(&x, &y)| if f(x.to_f64(), y.to_f64()) { T::ONE } else { T::ZERO }).collect();
        Tensor::from_vec(v, &shape)
    })
}

//! Broadcasting elementwise binary ops (add, sub, mul, div, maximum, minimum) and scalar forms.

use crate::autograd::Op;
use crate::layout::{broadcast_shape, Layout};
use crate::storage::Storage;
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
    fn cuda(self) -> crate::cuda::Binary {
        use crate::cuda::Binary;
        match self {
            BinKind::Add => Binary::Add,
            BinKind::Sub => Binary::Sub,
            BinKind::Mul => Binary::Mul,
            BinKind::Div => Binary::Div,
            BinKind::Max => Binary::Max,
            BinKind::Min => Binary::Min,
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

/// Merges adjacent dims that both operands traverse the same way, so a broadcast like
/// `x[N,C,H,W] + bias[1,C,1,1]` becomes `[N, C, H*W]` with one long inner run per row.
fn coalesce(shape: &[usize], sa: &[usize], sb: &[usize]) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let (mut shp, mut ra, mut rb): (Vec<usize>, Vec<usize>, Vec<usize>) = (vec![], vec![], vec![]);
    for d in 0..shape.len() {
        if shape[d] == 1 {
            continue;
        }
        if let (Some(&n), Some(&a), Some(&b)) = (shp.last(), ra.last(), rb.last()) {
            // The previous dim continues this one when its stride is this stride times this extent.
            if a == sa[d] * shape[d] && b == sb[d] * shape[d] {
                let last = shp.len() - 1;
                shp[last] = n * shape[d];
                ra[last] = sa[d];
                rb[last] = sb[d];
                continue;
            }
        }
        shp.push(shape[d]);
        ra.push(sa[d]);
        rb.push(sb[d]);
    }
    if shp.is_empty() {
        (vec![1], vec![0], vec![0])
    } else {
        (shp, ra, rb)
    }
}

/// Applies `f` over the broadcast layouts. The innermost (coalesced) dim is a run with stride
/// 0 or 1 per operand in the common cases, handled by tight loops; rows run in parallel.
fn binary_kernel<T: Float>(f: impl Fn(T, T) -> T + Sync, a: &[T], la: &Layout, b: &[T], lb: &Layout) -> Vec<T> {
    let n = la.numel();
    let mut out = vec![T::ZERO; n];
    if n == 0 {
        return out;
    }
    let (shape, sa, sb) = coalesce(&la.shape, &la.strides, &lb.strides);
    let r = shape.len();
    let inner = shape[r - 1];
    let (ia, ib) = (sa[r - 1], sb[r - 1]);
    let row = |row_idx: usize, dst: &mut [T]| {
        // Offsets of this row: divmod over the outer dims (once per row, not per element).
        let (mut oa, mut ob, mut rem) = (la.offset, lb.offset, row_idx);
        for d in (0..r - 1).rev() {
            let i = rem % shape[d];
            rem /= shape[d];
            oa += i * sa[d];
            ob += i * sb[d];
        }
        match (ia, ib) {
            (1, 1) => {
                for ((o, &x), &y) in dst.iter_mut().zip(&a[oa..oa + inner]).zip(&b[ob..ob + inner]) {
                    *o = f(x, y);
                }
            }
            (1, 0) => {
                let y = b[ob];
                for (o, &x) in dst.iter_mut().zip(&a[oa..oa + inner]) {
                    *o = f(x, y);
                }
            }
            (0, 1) => {
                let x = a[oa];
                for (o, &y) in dst.iter_mut().zip(&b[ob..ob + inner]) {
                    *o = f(x, y);
                }
            }
            _ => {
                for (j, o) in dst.iter_mut().enumerate() {
                    *o = f(a[oa + j * ia], b[ob + j * ib]);
                }
            }
        }
    };
    if n >= PAR_THRESHOLD {
        // Group short rows so each task has enough work.
        let rows_per_task = (PAR_THRESHOLD / 4 / inner).max(1);
        out.par_chunks_mut(inner * rows_per_task).enumerate().for_each(|(t, chunk)| {
            for (k, dst) in chunk.chunks_mut(inner).enumerate() {
                row(t * rows_per_task + k, dst);
            }
        });
    } else {
        for (i, dst) in out.chunks_mut(inner).enumerate() {
            row(i, dst);
        }
    }
    out
}

fn dispatch_kernel<T: Float>(kind: BinKind, a: &[T], la: &Layout, b: &[T], lb: &Layout) -> Vec<T> {
    match kind {
        BinKind::Add => binary_kernel(|x: T, y: T| x + y, a, la, b, lb),
        BinKind::Sub => binary_kernel(|x: T, y: T| x - y, a, la, b, lb),
        BinKind::Mul => binary_kernel(|x: T, y: T| x * y, a, la, b, lb),
        BinKind::Div => binary_kernel(|x: T, y: T| x / y, a, la, b, lb),
        k => binary_kernel(move |x: T, y: T| k.apply(x, y), a, la, b, lb),
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
    let shape = broadcast_shape(op, a.dims(), b.dims())?;
    let la = a.layout().expand(&shape)?;
    let lb = b.layout().expand(&shape)?;
    if !a.device().is_cpu() {
        let (dims, sa, sb) = coalesce(&la.shape, &la.strides, &lb.strides);
        let out = crate::cuda::ops::binary(kind.cuda(), op, a, b, (&la, &lb), (&dims, &sa, &sb), &shape)?;
        return Ok(out.attach_op(vec![a.clone(), b.clone()], BinaryOp { kind }));
    }
    // One read guard when both operands share storage (`x * x`): taking the same RwLock twice
    // can deadlock if a writer queues in between.
    let guard_a = a.storage();
    let guard_b = if a.same_storage(b) { None } else { Some(b.storage()) };
    let (sa, sb) = (guard_a.cpu(), guard_b.as_ref().map_or(guard_a.cpu(), |g| g.cpu()));
    let out = with_float!(a.dtype(), op, |T| {
        let va = T::slice(sa).expect("dtype checked");
        let vb = T::slice(sb).expect("dtype checked");
        Ok(Storage::Cpu(T::into_storage(dispatch_kernel::<T>(kind, va, &la, vb, &lb))))
    })?;
    drop((guard_a, guard_b));
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
    if !a.device().is_cpu() {
        // No comparison kernel yet: compare on the host and move the mask back.
        let host = compare(&a.to_device(crate::Device::Cpu)?, &b.to_device(crate::Device::Cpu)?, op, f)?;
        return host.to_device(a.device());
    }
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

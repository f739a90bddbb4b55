//! Indexing: index_select, gather, scatter_add, where_cond and masked_fill.
//!
//! Indices are host `usize` slices (they come from samplers, masks and label lists, never from a
//! gradient), so only the float operands take part in autograd.

use crate::autograd::Op;
use crate::layout::{broadcast_shape, contiguous_strides, norm_dim, numel, Layout};
use crate::ops::softmax::{for_blocks, split3};
use crate::tensor::check_cpu;
use crate::{shape_err, with_float, Error, Float, Result, Tensor};

/// Storage offsets (with `strides`) of every multi-index of `shape`, row-major.
fn sub_offsets(shape: &[usize], strides: &[usize]) -> Vec<usize> {
    Layout { shape: shape.to_vec(), strides: strides.to_vec(), offset: 0 }.offsets().collect()
}

fn check_dtype(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.dtype() != b.dtype() {
        return Err(Error::DTypeMismatch { op, lhs: a.dtype(), rhs: b.dtype() });
    }
    if a.device() != b.device() {
        return Err(Error::DeviceMismatch { op, lhs: a.device(), rhs: b.device() });
    }
    Ok(())
}

/// `out[o, k, i] += x[o, idx[k], i]` (select) or its adjoint `gx[o, idx[k], i] += g[o, k, i]`.
fn index_select_kernel<T: Float>(x: &[T], n: usize, inner: usize, idx: &[usize]) -> Vec<T> {
    let m = idx.len();
    let mut out = vec![T::ZERO; x.len() / n.max(1) * m];
    for_blocks(&mut out, m * inner, |o, ob| {
        let xb = &x[o * n * inner..(o + 1) * n * inner];
        for (k, &j) in idx.iter().enumerate() {
            ob[k * inner..(k + 1) * inner].copy_from_slice(&xb[j * inner..(j + 1) * inner]);
        }
    });
    out
}

struct IndexSelectOp {
    dim: usize,
    indices: Vec<usize>,
}

impl Op for IndexSelectOp {
    fn name(&self) -> &'static str {
        "index_select"
    }
    fn backward(&self, inputs: &[Tensor], _: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let x = &inputs[0];
        let (_, n, inner) = split3(x.dims(), self.dim);
        let m = self.indices.len();
        let gx = with_float!(x.dtype(), "index_select", |T| {
            g.with_slice(|g: &[T]| {
                let mut gx = vec![T::ZERO; x.numel()];
                // Each outer block of gx is written by one task; repeated indices add up.
                for_blocks(&mut gx, n * inner, |o, xb| {
                    let gb = &g[o * m * inner..(o + 1) * m * inner];
                    for (k, &j) in self.indices.iter().enumerate() {
                        for (d, &s) in xb[j * inner..(j + 1) * inner].iter_mut().zip(&gb[k * inner..(k + 1) * inner]) {
                            *d += s;
                        }
                    }
                });
                Tensor::from_vec(gx, x.dims())
            })?
        })?;
        Ok(vec![Some(gx)])
    }
}

/// Checks a gather/scatter index: same rank as `target`, every value below `target[dim]`, and
/// `index_shape[d] <= limit[d]` for each shape in `limits` (the dim itself excluded when
/// `skip_dim`).
fn check_index(
    op: &'static str,
    target: &[usize],
    dim: usize,
    index: &[usize],
    index_shape: &[usize],
    limits: &[(&[usize], bool)],
) -> Result<()> {
    if index_shape.len() != target.len() {
        return shape_err(op, format!("index shape {index_shape:?} must have the rank of {target:?}"));
    }
    if index.len() != numel(index_shape) {
        return shape_err(op, format!("{} indices do not fill index shape {index_shape:?}", index.len()));
    }
    for (lim, skip_dim) in limits {
        if index_shape.iter().zip(lim.iter()).enumerate().any(|(d, (&i, &l))| !(*skip_dim && d == dim) && i > l) {
            return shape_err(op, format!("index shape {index_shape:?} exceeds {lim:?} (dim {dim})"));
        }
    }
    if let Some((p, &v)) = index.iter().enumerate().find(|(_, &v)| v >= target[dim]) {
        return Err(Error::Msg(format!(
            "{op}: index {v} at position {p} is out of range for dim {dim} of size {} (shape {target:?})",
            target[dim]
        )));
    }
    Ok(())
}

/// Precomputed offsets for one gather/scatter pattern between a "source-like" tensor `a`
/// (indexed by the index values along `dim`) and a "position-like" tensor `b` (indexed by the
/// index positions). Both are contiguous with their own shapes.
struct IndexPlan {
    a_outer: Vec<usize>,
    a_inner: Vec<usize>,
    a_dim_stride: usize,
    b_outer: Vec<usize>,
    b_inner: Vec<usize>,
    b_dim_stride: usize,
    m: usize,
}

impl IndexPlan {
    fn new(a_shape: &[usize], b_shape: &[usize], dim: usize, index_shape: &[usize]) -> Self {
        let (sa, sb) = (contiguous_strides(a_shape), contiguous_strides(b_shape));
        IndexPlan {
            a_outer: sub_offsets(&index_shape[..dim], &sa[..dim]),
            a_inner: sub_offsets(&index_shape[dim + 1..], &sa[dim + 1..]),
            a_dim_stride: sa[dim],
            b_outer: sub_offsets(&index_shape[..dim], &sb[..dim]),
            b_inner: sub_offsets(&index_shape[dim + 1..], &sb[dim + 1..]),
            b_dim_stride: sb[dim],
            m: index_shape[dim],
        }
    }
    /// Calls `f(a_offset, b_offset)` for every index position, in row-major order.
    #[inline]
    fn for_each(&self, index: &[usize], mut f: impl FnMut(usize, usize)) {
        let inner = self.a_inner.len();
        let mut p = 0;
        for (&ao, &bo) in self.a_outer.iter().zip(&self.b_outer) {
            for k in 0..self.m {
                let bk = bo + k * self.b_dim_stride;
                for (&ai, &bi) in self.a_inner.iter().zip(&self.b_inner) {
                    f(ao + index[p] * self.a_dim_stride + ai, bk + bi);
                    p += 1;
                }
            }
        }
        debug_assert_eq!(p, self.a_outer.len() * self.m * inner);
    }
}

/// `out[b] = a[a_off]` over an index pattern, into zeros of `b_shape`.
fn gather_into<T: Float>(a: &[T], plan: &IndexPlan, index: &[usize], b_len: usize) -> Vec<T> {
    let mut out = vec![T::ZERO; b_len];
    plan.for_each(index, |ao, bo| out[bo] = a[ao]);
    out
}

/// `a[a_off] += b[b_off]` over an index pattern (sequential: indices may collide).
fn scatter_add_into<T: Float>(a: &mut [T], plan: &IndexPlan, index: &[usize], b: &[T]) {
    plan.for_each(index, |ao, bo| a[ao] += b[bo]);
}

struct GatherOp {
    dim: usize,
    index: Vec<usize>,
    index_shape: Vec<usize>,
}

impl Op for GatherOp {
    fn name(&self) -> &'static str {
        "gather"
    }
    fn backward(&self, inputs: &[Tensor], _: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let x = &inputs[0];
        let plan = IndexPlan::new(x.dims(), &self.index_shape, self.dim, &self.index_shape);
        let gx = with_float!(x.dtype(), "gather", |T| {
            g.with_slice(|g: &[T]| {
                let mut gx = vec![T::ZERO; x.numel()];
                scatter_add_into(&mut gx, &plan, &self.index, g);
                Tensor::from_vec(gx, x.dims())
            })?
        })?;
        Ok(vec![Some(gx)])
    }
}

struct ScatterAddOp {
    dim: usize,
    index: Vec<usize>,
    index_shape: Vec<usize>,
}

impl Op for ScatterAddOp {
    fn name(&self) -> &'static str {
        "scatter_add"
    }
    fn backward(&self, inputs: &[Tensor], _: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (x, src) = (&inputs[0], &inputs[1]);
        let gs = if src.requires_grad() {
            let plan = IndexPlan::new(x.dims(), src.dims(), self.dim, &self.index_shape);
            Some(with_float!(x.dtype(), "scatter_add", |T| {
                g.with_slice(|g: &[T]| Tensor::from_vec(gather_into(g, &plan, &self.index, src.numel()), src.dims()))?
            })?)
        } else {
            None
        };
        Ok(vec![Some(g.clone()), gs])
    }
}

struct WhereOp {
    /// The condition, in the operands' dtype, expanded to the output shape.
    mask: Tensor,
}

impl Op for WhereOp {
    fn name(&self) -> &'static str {
        "where_cond"
    }
    fn backward(&self, inputs: &[Tensor], out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (a, b) = (&inputs[0], &inputs[1]);
        let (ga, gb) = with_float!(out.dtype(), "where_cond", |T| {
            let gv = g.to_vec::<T>()?;
            let m = self.mask.to_vec::<T>()?;
            let pick = |on: bool| -> Result<Tensor> {
                let v: Vec<T> =
                    gv.iter().zip(&m).map(|(&g, &k)| if (k != T::ZERO) == on { g } else { T::ZERO }).collect();
                Tensor::from_vec(v, out.dims())
            };
            let ga = if a.requires_grad() { Some(pick(true)?.sum_to(a.dims())?) } else { None };
            let gb = if b.requires_grad() { Some(pick(false)?.sum_to(b.dims())?) } else { None };
            Ok((ga, gb))
        })?;
        Ok(vec![ga, gb])
    }
}

impl Tensor {
    /// Picks the entries `indices` along `dim` (repeats allowed); the gradient adds back.
    pub fn index_select(&self, dim: isize, indices: &[usize]) -> Result<Tensor> {
        let op = "index_select";
        check_cpu(self.device(), op)?;
        let d = norm_dim(op, dim, self.rank())?;
        let (_, n, inner) = split3(self.dims(), d);
        if let Some((p, &v)) = indices.iter().enumerate().find(|(_, &v)| v >= n) {
            return Err(Error::Msg(format!(
                "{op}: index {v} at position {p} is out of range for dim {d} of size {n} (shape {:?})",
                self.dims()
            )));
        }
        let mut shape = self.shape();
        shape[d] = indices.len();
        with_float!(self.dtype(), op, |T| {
            let v = self.with_slice(|x: &[T]| index_select_kernel(x, n, inner, indices))?;
            Ok(Tensor::from_vec_op(v, &shape, vec![self.clone()], IndexSelectOp { dim: d, indices: indices.to_vec() }))
        })
    }

    /// PyTorch `gather`: `out[p] = self[p with p[dim] replaced by index[p]]`, where `index` is a
    /// row-major `index_shape` array of the same rank as `self` (`index_shape[d] <= self[d]`
    /// off `dim`). The output has `index_shape`.
    pub fn gather(&self, dim: isize, index: &[usize], index_shape: &[usize]) -> Result<Tensor> {
        let op = "gather";
        check_cpu(self.device(), op)?;
        let d = norm_dim(op, dim, self.rank())?;
        check_index(op, self.dims(), d, index, index_shape, &[(self.dims(), true)])?;
        let plan = IndexPlan::new(self.dims(), index_shape, d, index_shape);
        with_float!(self.dtype(), op, |T| {
            let v = self.with_slice(|x: &[T]| gather_into(x, &plan, index, index.len()))?;
            let saved = GatherOp { dim: d, index: index.to_vec(), index_shape: index_shape.to_vec() };
            Ok(Tensor::from_vec_op(v, index_shape, vec![self.clone()], saved))
        })
    }

    /// PyTorch `scatter_add` (out of place): `self` plus `src[p]` added at `p` with `p[dim]`
    /// replaced by `index[p]`, for every position `p` of `index_shape` (which must fit in `src`
    /// and, off `dim`, in `self`). Differentiable in `self` and `src`.
    pub fn scatter_add(&self, dim: isize, index: &[usize], index_shape: &[usize], src: &Tensor) -> Result<Tensor> {
        let op = "scatter_add";
        check_cpu(self.device(), op)?;
        check_dtype(op, self, src)?;
        let d = norm_dim(op, dim, self.rank())?;
        if src.rank() != self.rank() {
            return shape_err(op, format!("src {:?} must have the rank of self {:?}", src.dims(), self.dims()));
        }
        check_index(op, self.dims(), d, index, index_shape, &[(self.dims(), true), (src.dims(), false)])?;
        let plan = IndexPlan::new(self.dims(), src.dims(), d, index_shape);
        with_float!(self.dtype(), op, |T| {
            let mut v = self.to_vec::<T>()?;
            src.with_slice(|s: &[T]| scatter_add_into(&mut v, &plan, index, s))?;
            let saved = ScatterAddOp { dim: d, index: index.to_vec(), index_shape: index_shape.to_vec() };
            Ok(Tensor::from_vec_op(v, self.dims(), vec![self.clone(), src.clone()], saved))
        })
    }

    /// `mask ? a : b` elementwise with broadcasting of all three. `mask01` is a float tensor
    /// read as "non-zero = true" and gets no gradient.
    pub fn where_cond(mask01: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let op = "where_cond";
        check_cpu(a.device(), op)?;
        check_dtype(op, a, b)?;
        if mask01.device() != a.device() {
            return Err(Error::DeviceMismatch { op, lhs: a.device(), rhs: mask01.device() });
        }
        let shape = broadcast_shape(op, &broadcast_shape(op, mask01.dims(), a.dims())?, b.dims())?;
        let mask = mask01.detach().to_dtype(a.dtype())?.expand(&shape)?.contiguous()?;
        let (la, lb) = (a.layout().expand(&shape)?, b.layout().expand(&shape)?);
        with_float!(a.dtype(), op, |T| {
            let v = {
                let (sa, sb) = (a.storage(), b.storage());
                let (va, vb) = (T::slice(sa.cpu()).expect("dtype checked"), T::slice(sb.cpu()).expect("dtype checked"));
                mask.with_slice(|m: &[T]| -> Vec<T> {
                    if la.is_contiguous() && lb.is_contiguous() {
                        let (va, vb) = (&va[la.offset..], &vb[lb.offset..]);
                        let mut out = vec![T::ZERO; m.len()];
                        const B: usize = 8192;
                        for_blocks(&mut out, B, |c, o| {
                            for (j, v) in o.iter_mut().enumerate() {
                                let i = c * B + j;
                                *v = if m[i] != T::ZERO { va[i] } else { vb[i] };
                            }
                        });
                        out
                    } else {
                        la.offsets()
                            .zip(lb.offsets())
                            .zip(m)
                            .map(|((i, j), &k)| if k != T::ZERO { va[i] } else { vb[j] })
                            .collect()
                    }
                })?
            };
            Ok(Tensor::from_vec_op(v, &shape, vec![a.clone(), b.clone()], WhereOp { mask }))
        })
    }

    /// `value` where `mask01` (broadcast to `self`'s shape) is non-zero, `self` elsewhere. The
    /// gradient flows to `self` where the mask is zero.
    pub fn masked_fill(&self, mask01: &Tensor, value: f64) -> Result<Tensor> {
        let op = "masked_fill";
        if broadcast_shape(op, mask01.dims(), self.dims())? != self.dims() {
            return shape_err(op, format!("mask {:?} does not broadcast to {:?}", mask01.dims(), self.dims()));
        }
        let fill = Tensor::scalar(value, self.dtype(), self.device())?;
        Tensor::where_cond(mask01, &fill, self)
    }
}

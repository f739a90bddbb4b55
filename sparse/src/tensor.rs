//! `SparseTensor`: features `[N_active, C]` (channels last, rows in `ActiveSet` order) plus the
//! set, and the differentiable conversions to and from dense NCHW tensors.

use crate::ActiveSet;
use rayon::prelude::*;
use spark_engine::{with_float, Error, Op, Result, Tensor};
use std::sync::Arc;

/// Sparse feature map: one row of C features per active site.
#[derive(Clone, Debug)]
pub struct SparseTensor {
    pub features: Tensor,
    pub active: Arc<ActiveSet>,
}

impl SparseTensor {
    /// Wraps features `[active.len(), C]`.
    pub fn new(features: Tensor, active: Arc<ActiveSet>) -> Result<SparseTensor> {
        match features.dims() {
            [n, _] if *n == active.len() => Ok(SparseTensor { features, active }),
            d => Err(Error::Shape {
                op: "SparseTensor::new",
                msg: format!("features must be [{}, C] for this active set, got {d:?}", active.len()),
            }),
        }
    }

    /// Gathers the active sites of a dense `[B, C, H, W]` tensor (differentiable: the gradient
    /// is scattered back, zero at inactive sites).
    pub fn from_dense(x: &Tensor, active: Arc<ActiveSet>) -> Result<SparseTensor> {
        let (b, c, h, w) = nchw("SparseTensor::from_dense", x)?;
        if (b, h, w) != (active.batch(), active.h(), active.w()) {
            return Err(Error::Shape {
                op: "SparseTensor::from_dense",
                msg: format!(
                    "input {:?} does not match the active set {}x{}x{}",
                    x.dims(),
                    active.batch(),
                    active.h(),
                    active.w()
                ),
            });
        }
        let n = active.len();
        let hw = h * w;
        let feats = with_float!(x.dtype(), "SparseTensor::from_dense", |T| {
            let data = x.with_slice(|xs: &[T]| {
                let mut out = vec![<T>::ZERO; n * c];
                out.par_chunks_mut(c.max(1)).zip(active.coords().par_iter()).with_min_len(256).for_each(
                    |(row, &[bb, y, xx])| {
                        let base = bb * c * hw + y * w + xx;
                        for (ch, v) in row.iter_mut().enumerate() {
                            *v = xs[base + ch * hw];
                        }
                    },
                );
                out
            })?;
            Ok(Tensor::from_vec_op(data, &[n, c], vec![x.clone()], GatherOp { active: active.clone() }))
        })?;
        Ok(SparseTensor { features: feats, active })
    }

    /// Dense `[B, C, H, W]` with zeros at inactive sites (differentiable).
    pub fn to_dense(&self) -> Result<Tensor> {
        scatter_dense(&self.features, &self.active, None)
    }

    /// Dense `[B, C, H, W]` whose inactive sites hold `fill` (`[C]`): SparK's densify with a
    /// mask token. Differentiable w.r.t. the features and `fill`.
    pub fn to_dense_fill(&self, fill: &Tensor) -> Result<Tensor> {
        let fill = fill.reshape(&[fill.numel()])?;
        if fill.numel() != self.channels() {
            return Err(Error::Shape {
                op: "SparseTensor::to_dense_fill",
                msg: format!("fill has {} elements, features have {} channels", fill.numel(), self.channels()),
            });
        }
        scatter_dense(&self.features, &self.active, Some(&fill))
    }

    /// Applies a row-preserving function to the features (activations, residual adds, linear
    /// layers on channels).
    pub fn map_features(&self, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<SparseTensor> {
        let out = f(&self.features)?;
        if out.rank() != 2 || out.dims()[0] != self.len() {
            return Err(Error::Shape {
                op: "SparseTensor::map_features",
                msg: format!("function returned {:?}, expected [{}, C]", out.dims(), self.len()),
            });
        }
        Ok(SparseTensor { features: out, active: self.active.clone() })
    }

    /// Elementwise sum of two tensors over the same sites (residual connections).
    pub fn add(&self, other: &SparseTensor) -> Result<SparseTensor> {
        if !self.active.same_sites(&other.active) {
            return Err(Error::Shape { op: "SparseTensor::add", msg: "operands live on different active sets".into() });
        }
        self.map_features(|f| f.add(&other.features))
    }

    pub fn channels(&self) -> usize {
        self.features.dims()[1]
    }
    /// Number of active rows.
    pub fn len(&self) -> usize {
        self.active.len()
    }
    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }
    pub fn dims_dense(&self) -> [usize; 4] {
        [self.active.batch(), self.channels(), self.active.h(), self.active.w()]
    }
}

pub(crate) fn nchw(op: &'static str, x: &Tensor) -> Result<(usize, usize, usize, usize)> {
    match x.dims() {
        &[b, c, h, w] => Ok((b, c, h, w)),
        d => Err(Error::Shape { op, msg: format!("expected a [B, C, H, W] tensor, got {d:?}") }),
    }
}

fn scatter_dense(feats: &Tensor, active: &Arc<ActiveSet>, fill: Option<&Tensor>) -> Result<Tensor> {
    let c = feats.dims()[1];
    let (b, h, w) = (active.batch(), active.h(), active.w());
    let hw = h * w;
    let grid = active.grid();
    let mut inputs = vec![feats.clone()];
    if let Some(f) = fill {
        if f.dtype() != feats.dtype() {
            return Err(Error::DTypeMismatch { op: "SparseTensor::to_dense_fill", lhs: feats.dtype(), rhs: f.dtype() });
        }
        inputs.push(f.clone());
    }
    with_float!(feats.dtype(), "SparseTensor::to_dense", |T| {
        let fv: Option<Vec<T>> = fill.map(|f| f.to_vec::<T>()).transpose()?;
        let data = feats.with_slice(|fs: &[T]| {
            let mut out = vec![<T>::ZERO; b * c * hw];
            // One (image, channel) plane per task: writes never overlap.
            out.par_chunks_mut(hw.max(1)).enumerate().with_min_len(4).for_each(|(bc, plane)| {
                let (bb, ch) = (bc / c, bc % c);
                let g = &grid[bb * hw..(bb + 1) * hw];
                for (p, v) in plane.iter_mut().enumerate() {
                    let r = g[p];
                    *v = if r >= 0 { fs[r as usize * c + ch] } else { fv.as_ref().map_or(<T>::ZERO, |f| f[ch]) };
                }
            });
            out
        })?;
        Ok(Tensor::from_vec_op(data, &[b, c, h, w], inputs, ScatterOp { active: active.clone(), c }))
    })
}

/// Backward of `from_dense`: scatter the row gradients into a zero dense tensor.
struct GatherOp {
    active: Arc<ActiveSet>,
}
impl Op for GatherOp {
    fn name(&self) -> &'static str {
        "sparse_from_dense"
    }
    fn backward(&self, _inputs: &[Tensor], _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(scatter_dense(g, &self.active, None)?)])
    }
}

/// Backward of `to_dense` / `to_dense_fill`: gather active sites; the fill gets the sum of the
/// gradient over inactive sites.
struct ScatterOp {
    active: Arc<ActiveSet>,
    c: usize,
}
impl Op for ScatterOp {
    fn name(&self) -> &'static str {
        "sparse_to_dense"
    }
    fn backward(&self, inputs: &[Tensor], _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let gf = SparseTensor::from_dense(g, self.active.clone())?.features;
        let mut grads = vec![Some(gf)];
        if inputs.len() == 2 {
            let (c, grid) = (self.c, self.active.grid());
            let hw = self.active.h() * self.active.w();
            let gfill = with_float!(g.dtype(), "sparse_to_dense backward", |T| {
                let v = g.with_slice(|gs: &[T]| {
                    (0..c)
                        .map(|ch| {
                            let mut s = <T>::ZERO;
                            for bb in 0..self.active.batch() {
                                let plane = &gs[(bb * c + ch) * hw..(bb * c + ch + 1) * hw];
                                let gr = &grid[bb * hw..(bb + 1) * hw];
                                for (p, &v) in plane.iter().enumerate() {
                                    if gr[p] < 0 {
                                        s += v;
                                    }
                                }
                            }
                            s
                        })
                        .collect::<Vec<T>>()
                })?;
                Tensor::from_vec(v, &[c])
            })?;
            grads.push(Some(gfill));
        }
        Ok(grads)
    }
}

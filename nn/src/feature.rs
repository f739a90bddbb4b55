//! `FeatureMap` (dense NCHW or sparse active-site features) and the forward context `Ctx`.

use std::collections::HashMap;

use spark_engine::{DType, Device, Error, Result, Rng, Tensor};

use crate::sparse_api::{SparseContext, SparseTensor};

/// What flows between layers: a dense `[B, C, H, W]` tensor, or features of the active sites
/// of a sparse map (`[N_active, C]` plus its `ActiveSet`). Layers run the matching op, so a
/// backbone is written once and runs both ways.
#[derive(Clone, Debug)]
pub enum FeatureMap {
    Dense(Tensor),
    Sparse(SparseTensor),
}

impl FeatureMap {
    pub fn is_sparse(&self) -> bool {
        matches!(self, FeatureMap::Sparse(_))
    }
    /// Channels (dim 1 of a dense map, columns of sparse features).
    pub fn channels(&self) -> usize {
        match self {
            FeatureMap::Dense(t) => t.dims().get(1).copied().unwrap_or(0),
            FeatureMap::Sparse(s) => s.channels(),
        }
    }
    pub fn dtype(&self) -> DType {
        match self {
            FeatureMap::Dense(t) => t.dtype(),
            FeatureMap::Sparse(s) => s.features.dtype(),
        }
    }
    /// The dense tensor, or an error naming `op` for a sparse map.
    pub fn dense(&self, op: &str) -> Result<&Tensor> {
        match self {
            FeatureMap::Dense(t) => Ok(t),
            FeatureMap::Sparse(_) => Err(Error::Msg(format!("{op}: needs a dense feature map, got a sparse one"))),
        }
    }
    /// As a dense `[B, C, H, W]` tensor (inactive sites zero for a sparse map).
    pub fn to_dense(&self) -> Result<Tensor> {
        match self {
            FeatureMap::Dense(t) => Ok(t.clone()),
            FeatureMap::Sparse(s) => s.to_dense(),
        }
    }
    /// Applies `f` to the dense tensor or to the sparse features (elementwise / per-row ops).
    pub fn map(&self, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<FeatureMap> {
        match self {
            FeatureMap::Dense(t) => Ok(FeatureMap::Dense(f(t)?)),
            FeatureMap::Sparse(s) => Ok(FeatureMap::Sparse(s.map_features(f)?)),
        }
    }
    /// `self + other` (residual add). Both must be the same kind; sparse maps must share sites.
    pub fn add(&self, other: &FeatureMap) -> Result<FeatureMap> {
        match (self, other) {
            (FeatureMap::Dense(a), FeatureMap::Dense(b)) => Ok(FeatureMap::Dense(a.add(b)?)),
            (FeatureMap::Sparse(a), FeatureMap::Sparse(b)) => {
                if !a.active.same_sites(&b.active) {
                    return Err(Error::Msg("FeatureMap::add: sparse maps have different active sites".into()));
                }
                let f = a.features.add(&b.features)?;
                Ok(FeatureMap::Sparse(SparseTensor { features: f, active: a.active.clone() }))
            }
            _ => Err(Error::Msg("FeatureMap::add: cannot add a dense map to a sparse one".into())),
        }
    }
}

/// SparK's dense simulation of sparse convolution (its PyTorch code): a patch mask
/// `[batch, fh, fw]` (true = visible); in this mode every dense conv / pool / norm output is
/// multiplied by the mask upsampled (nearest) to its size, and BatchNorm takes statistics over
/// visible sites only. It is the reference the sparse path must equal.
pub struct DenseMask {
    patch: Vec<bool>,
    batch: usize,
    fh: usize,
    fw: usize,
    cache: HashMap<(usize, usize, DType, Device), Tensor>,
}

impl DenseMask {
    pub fn new(patch: &[bool], batch: usize, fh: usize, fw: usize) -> Result<DenseMask> {
        if patch.len() != batch * fh * fw || fh == 0 || fw == 0 {
            return Err(Error::Msg(format!(
                "DenseMask: patch mask has {} entries, expected {batch}x{fh}x{fw}",
                patch.len()
            )));
        }
        Ok(DenseMask { patch: patch.to_vec(), batch, fh, fw, cache: HashMap::new() })
    }
    /// The 0/1 mask `[batch, 1, h, w]` on the CPU; `h`, `w` must be multiples of the patch grid.
    pub fn mask(&mut self, h: usize, w: usize, dtype: DType) -> Result<Tensor> {
        self.mask_on(h, w, dtype, Device::Cpu)
    }
    /// The same mask on `device` (built once per size, dtype and device).
    pub fn mask_on(&mut self, h: usize, w: usize, dtype: DType, device: Device) -> Result<Tensor> {
        if let Some(t) = self.cache.get(&(h, w, dtype, device)) {
            return Ok(t.clone());
        }
        let (fh, fw) = (self.fh, self.fw);
        if !h.is_multiple_of(fh) || !w.is_multiple_of(fw) {
            return Err(Error::Msg(format!("DenseMask: a {h}x{w} map is not a multiple of the {fh}x{fw} patch grid")));
        }
        let (sy, sx) = (h / fh, w / fw);
        let mut v = vec![0.0f64; self.batch * h * w];
        for b in 0..self.batch {
            for y in 0..h {
                for x in 0..w {
                    if self.patch[(b * fh + y / sy) * fw + x / sx] {
                        v[(b * h + y) * w + x] = 1.0;
                    }
                }
            }
        }
        let t = Tensor::from_vec(v, &[self.batch, 1, h, w])?.to_dtype(dtype)?.to_device(device)?;
        self.cache.insert((h, w, dtype, device), t.clone());
        Ok(t)
    }
}

/// Per-forward state that is not a weight: the random generator (dropout, drop-path), the
/// sparse context for sparse forwards (active sets of each scale, cached kernel maps), and
/// optionally SparK's dense-simulation mask for dense forwards.
/// Train/eval is a property of the modules (`Module::set_training`), as in PyTorch.
pub struct Ctx {
    pub rng: Rng,
    pub sparse: Option<SparseContext>,
    pub dense_mask: Option<DenseMask>,
}

impl Ctx {
    /// A dense-forward context.
    pub fn new(seed: u64) -> Ctx {
        Ctx { rng: Rng::new(seed), sparse: None, dense_mask: None }
    }
    /// A dense forward that simulates sparsity as SparK's PyTorch code does (see `DenseMask`).
    pub fn with_dense_mask(seed: u64, mask: DenseMask) -> Ctx {
        Ctx { rng: Rng::new(seed), sparse: None, dense_mask: Some(mask) }
    }
    /// The dense-simulation mask for a `[B, C, h, w]` map, if that mode is on.
    pub fn mask_like(&mut self, t: &Tensor) -> Result<Option<Tensor>> {
        match (&mut self.dense_mask, t.dims()) {
            (None, _) => Ok(None),
            (Some(m), &[_, _, h, w]) => Ok(Some(m.mask_on(h, w, t.dtype(), t.device())?)),
            (Some(_), d) => Err(Error::Msg(format!("dense mask: expected a [B, C, H, W] map, got {d:?}"))),
        }
    }
    /// Multiplies a dense NCHW map by the dense-simulation mask when that mode is on.
    pub fn remask(&mut self, t: Tensor) -> Result<Tensor> {
        match self.mask_like(&t)? {
            Some(m) => t.mul(&m),
            None => Ok(t),
        }
    }
    /// A sparse-forward context.
    pub fn with_sparse(seed: u64, sparse: SparseContext) -> Ctx {
        Ctx { rng: Rng::new(seed), sparse: Some(sparse), dense_mask: None }
    }
    /// The sparse context, or an error naming `op` when a sparse map meets a dense-only context.
    pub fn sparse_ctx(&mut self, op: &str) -> Result<&mut SparseContext> {
        self.sparse.as_mut().ok_or_else(|| Error::Msg(format!("{op}: a sparse feature map needs Ctx::with_sparse(…)")))
    }
}

//! Dropout (per element) and DropPath (stochastic depth, per sample; per image for sparse maps).

use spark_engine::{Error, Result, Rng, Tensor};

use crate::feature::{Ctx, FeatureMap};
use crate::module::{Kind, Layer, Module};
use crate::sparse_api::SparseTensor;

fn check_p(p: f64, what: &str) -> Result<()> {
    if (0.0..1.0).contains(&p) {
        Ok(())
    } else {
        Err(Error::Msg(format!("{what}: drop probability {p} must be in [0, 1)")))
    }
}

/// A 0 / 1/(1-p) mask of `shape` (keep with probability 1-p), in `like`'s dtype.
fn keep_mask(shape: &[usize], p: f64, rng: &mut Rng, like: &Tensor) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let scale = 1.0 / (1.0 - p);
    let v: Vec<f64> = (0..n).map(|_| if rng.uniform() >= p { scale } else { 0.0 }).collect();
    Tensor::from_vec(v, shape)?.to_dtype(like.dtype())?.to_device(like.device())
}

/// `nn.Dropout(p)`: identity in eval mode.
pub struct Dropout {
    pub p: f64,
    pub training: bool,
}

impl Dropout {
    pub fn new(p: f64) -> Result<Dropout> {
        check_p(p, "Dropout")?;
        Ok(Dropout { p, training: true })
    }
}

/// timm `DropPath(p)`: in training, each sample's residual branch is zeroed with probability p
/// and survivors scaled by 1/(1-p); identity in eval mode or when p = 0.
pub struct DropPath {
    pub p: f64,
    pub training: bool,
}

impl DropPath {
    pub fn new(p: f64) -> Result<DropPath> {
        check_p(p, "DropPath")?;
        Ok(DropPath { p, training: true })
    }
    pub fn is_active(&self) -> bool {
        self.training && self.p > 0.0
    }
}

impl Module for Dropout {
    fn visit(&self, _: &str, _: &mut dyn FnMut(&str, &Tensor, Kind)) {}
    fn visit_mut(&mut self, _: &str, _: &mut dyn FnMut(&str, &mut Tensor, Kind)) {}
    fn set_training(&mut self, t: bool) {
        self.training = t;
    }
}

impl Module for DropPath {
    fn visit(&self, _: &str, _: &mut dyn FnMut(&str, &Tensor, Kind)) {}
    fn visit_mut(&mut self, _: &str, _: &mut dyn FnMut(&str, &mut Tensor, Kind)) {}
    fn set_training(&mut self, t: bool) {
        self.training = t;
    }
}

impl Layer for Dropout {
    fn forward(&self, x: &FeatureMap, ctx: &mut Ctx) -> Result<FeatureMap> {
        if !self.training || self.p == 0.0 {
            return Ok(x.clone());
        }
        x.map(|t| crate::functional::dropout(t, self.p, true, &mut ctx.rng))
    }
}

impl Layer for DropPath {
    fn forward(&self, x: &FeatureMap, ctx: &mut Ctx) -> Result<FeatureMap> {
        if !self.is_active() {
            return Ok(x.clone());
        }
        match x {
            FeatureMap::Dense(t) => {
                let mut shape = vec![1; t.rank()];
                shape[0] = t.dims()[0];
                Ok(FeatureMap::Dense(t.mul(&keep_mask(&shape, self.p, &mut ctx.rng, t)?)?))
            }
            FeatureMap::Sparse(s) => Ok(FeatureMap::Sparse(drop_path_sparse(s, self.p, &mut ctx.rng)?)),
        }
    }
}

/// One keep/drop draw per image, broadcast to that image's active rows.
fn drop_path_sparse(s: &SparseTensor, p: f64, rng: &mut Rng) -> Result<SparseTensor> {
    let a = &s.active;
    let scale = 1.0 / (1.0 - p);
    let mut rows = vec![0.0f64; a.len()];
    for b in 0..a.batch() {
        let keep = if rng.uniform() >= p { scale } else { 0.0 };
        rows[a.image_rows(b)].iter_mut().for_each(|v| *v = keep);
    }
    let m = Tensor::from_vec(rows, &[a.len(), 1])?.to_dtype(s.features.dtype())?.to_device(s.features.device())?;
    s.map_features(|f| f.mul(&m))
}

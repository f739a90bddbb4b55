//! Global Response Normalization (ConvNeXt-V2), channels-last, with the official repo's
//! parameter shapes `gamma, beta: [1, 1, 1, C]`:
//! `gx = ||x||_2 over space (per image, per channel); nx = gx / (mean_c gx + 1e-6);
//!  y = gamma * (x * nx) + beta + x`.
//! On sparse maps the spatial norm runs over each image's active sites only.

use spark_engine::{Result, Tensor};

use crate::feature::{Ctx, FeatureMap};
use crate::init::{Builder, Init};
use crate::module::{join, Kind, Layer, Module};
use crate::sparse_api::SparseTensor;

pub struct Grn {
    pub gamma: Tensor,
    pub beta: Tensor,
}

const GRN_EPS: f64 = 1e-6;

impl Grn {
    pub fn new(c: usize, b: &mut Builder) -> Result<Grn> {
        Ok(Grn { gamma: b.param(&[1, 1, 1, c], Init::Zeros)?, beta: b.param(&[1, 1, 1, c], Init::Zeros)? })
    }
    fn c(&self) -> usize {
        self.gamma.dims()[3]
    }
    /// `x` is `[..., C]` holding the sites of one or more images; `gx` broadcasts over the sites.
    fn apply(&self, x: &Tensor, gx: &Tensor, gamma: &Tensor, beta: &Tensor) -> Result<Tensor> {
        let nx = gx.div(&gx.mean(&[-1], true)?.add_scalar(GRN_EPS)?)?;
        gamma.mul(&x.mul(&nx)?)?.add(beta)?.add(x)
    }
    /// Dense channels-last `[B, H, W, C]`.
    pub fn forward_tensor(&self, x: &Tensor) -> Result<Tensor> {
        let gx = x.sqr()?.sum(&[1, 2], true)?.sqrt()?;
        self.apply(x, &gx, &self.gamma, &self.beta)
    }
    /// Sparse features `[N, C]`, rows batch-major: the L2 norm of each image's active rows.
    fn forward_sparse(&self, s: &SparseTensor) -> Result<SparseTensor> {
        let c = self.c();
        let (g, b) = (self.gamma.reshape(&[1, c])?, self.beta.reshape(&[1, c])?);
        let a = s.active.clone();
        s.map_features(|f| {
            let mut parts = Vec::with_capacity(a.batch());
            for img in 0..a.batch() {
                let r = a.image_rows(img);
                if r.is_empty() {
                    continue;
                }
                let xi = f.narrow(0, r.start, r.len())?;
                let gx = xi.sqr()?.sum(&[0], true)?.sqrt()?;
                parts.push(self.apply(&xi, &gx, &g, &b)?);
            }
            if parts.is_empty() {
                return Ok(f.clone());
            }
            Tensor::cat(&parts, 0)
        })
    }
}

impl Module for Grn {
    fn visit(&self, p: &str, f: &mut dyn FnMut(&str, &Tensor, Kind)) {
        f(&join(p, "gamma"), &self.gamma, Kind::Param);
        f(&join(p, "beta"), &self.beta, Kind::Param);
    }
    fn visit_mut(&mut self, p: &str, f: &mut dyn FnMut(&str, &mut Tensor, Kind)) {
        f(&join(p, "gamma"), &mut self.gamma, Kind::Param);
        f(&join(p, "beta"), &mut self.beta, Kind::Param);
    }
}

impl Layer for Grn {
    /// Dense input must be channels-last `[B, H, W, C]` (as inside a ConvNeXt block).
    fn forward(&self, x: &FeatureMap, _ctx: &mut Ctx) -> Result<FeatureMap> {
        match x {
            FeatureMap::Dense(t) => Ok(FeatureMap::Dense(self.forward_tensor(t)?)),
            FeatureMap::Sparse(s) => Ok(FeatureMap::Sparse(self.forward_sparse(s)?)),
        }
    }
}

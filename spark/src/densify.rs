//! Densify (SPARK.md section 4): per-scale norm over the visible sites, mask-token filling of the
//! masked sites, projection to the decoder width.

use serde::{Deserialize, Serialize};
use spark_engine::{Conv2dParams, Error, Result, Tensor};
use spark_nn::module::join;
use spark_nn::{
    BatchNorm2d, Builder, Conv2d, Ctx, FeatureMap, Init, Kind, Layer, LayerNorm, LnLayout, Module, WeightInit,
};

/// Which norm densify applies before filling (explicit, never guessed from the model name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DensifyNormKind {
    /// Sparse BatchNorm (ResNets).
    BatchNorm,
    /// Sparse LayerNorm, channels first, eps 1e-6 (ConvNeXts).
    LayerNorm,
    Identity,
}

/// The norm of one scale.
pub enum DensifyNorm {
    Bn(BatchNorm2d),
    Ln(LayerNorm),
    Identity,
}

impl DensifyNorm {
    pub fn new(kind: DensifyNormKind, c: usize, b: &mut Builder) -> Result<DensifyNorm> {
        Ok(match kind {
            DensifyNormKind::BatchNorm => DensifyNorm::Bn(BatchNorm2d::new(c, b)?),
            DensifyNormKind::LayerNorm => DensifyNorm::Ln(LayerNorm::new(c, 1e-6, LnLayout::ChannelsFirst, b)?),
            DensifyNormKind::Identity => DensifyNorm::Identity,
        })
    }

    /// Normalises over visible sites: a sparse map directly, a dense map through the context's
    /// dense-simulation mask.
    pub fn forward(&self, x: &FeatureMap, ctx: &mut Ctx) -> Result<FeatureMap> {
        match self {
            DensifyNorm::Bn(n) => n.forward(x, ctx),
            DensifyNorm::Ln(n) => n.forward(x, ctx),
            DensifyNorm::Identity => Ok(x.clone()),
        }
    }
}

impl Module for DensifyNorm {
    fn visit(&self, p: &str, f: &mut dyn FnMut(&str, &Tensor, Kind)) {
        match self {
            DensifyNorm::Bn(n) => n.visit(p, f),
            DensifyNorm::Ln(n) => n.visit(p, f),
            DensifyNorm::Identity => {}
        }
    }
    fn visit_mut(&mut self, p: &str, f: &mut dyn FnMut(&str, &mut Tensor, Kind)) {
        match self {
            DensifyNorm::Bn(n) => n.visit_mut(p, f),
            DensifyNorm::Ln(n) => n.visit_mut(p, f),
            DensifyNorm::Identity => {}
        }
    }
    fn set_training(&mut self, t: bool) {
        if let DensifyNorm::Bn(n) = self {
            n.set_training(t)
        }
    }
}

/// Densify for all scales; index 0 is the deepest.
pub struct Densify {
    pub norms: Vec<DensifyNorm>,
    pub projs: Vec<Option<Conv2d>>,
    /// `[1, C_i, 1, 1]`, trunc-normal std 0.02 in [-0.02, 0.02].
    pub mask_tokens: Vec<Tensor>,
}

impl Densify {
    /// `enc_widths` deepest first; decoder widths `dec_width >> i`. The deepest projection is
    /// Identity when `identity_when_equal` and the widths match (official ConvNeXt-T/S).
    pub fn new(
        enc_widths: &[usize],
        dec_width: usize,
        norm: DensifyNormKind,
        identity_when_equal: bool,
        b: &mut Builder,
    ) -> Result<Densify> {
        let (mut norms, mut projs, mut mask_tokens) = (Vec::new(), Vec::new(), Vec::new());
        for (i, &c) in enc_widths.iter().enumerate() {
            let d = dec_width >> i;
            if d == 0 {
                return Err(Error::Msg(format!(
                    "Densify: decoder width {dec_width} too small for {} levels",
                    enc_widths.len()
                )));
            }
            let token = if b.is_shape_only() {
                b.param(&[1, c, 1, 1], Init::Zeros)?
            } else {
                Tensor::trunc_normal(&[1, c, 1, 1], 0.0, 0.02, -0.02, 0.02, &mut b.rng, b.dtype, b.device)?
                    .to_variable()
            };
            mask_tokens.push(token);
            norms.push(DensifyNorm::new(norm, c, b)?);
            projs.push(if i == 0 && identity_when_equal && c == d {
                None
            } else {
                let k = if i == 0 { 1 } else { 3 };
                Some(Conv2d::new(c, d, k, Conv2dParams::new(1, k / 2), true, WeightInit::TorchDefault, b)?)
            });
        }
        Ok(Densify { norms, projs, mask_tokens })
    }

    /// Level `i`: norm over visible sites, fill masked sites with the token, project. `mask` is
    /// `[B,1,h,w]` 0/1 at this level's resolution (used only for dense maps).
    pub fn level(&self, i: usize, x: &FeatureMap, mask: &Tensor, ctx: &mut Ctx, plain: &mut Ctx) -> Result<Tensor> {
        let y = self.norms[i].forward(x, ctx)?;
        let token = &self.mask_tokens[i];
        let filled = match &y {
            FeatureMap::Sparse(s) => s.to_dense_fill(token)?,
            // where(mask, y, token) written as y*m + token*(1-m), differentiable in both.
            FeatureMap::Dense(t) => t.mul(mask)?.add(&token.mul(&mask.rsub_scalar(1.0)?)?)?,
        };
        match &self.projs[i] {
            // The projection is an ordinary dense conv: run it without the dense-simulation mask.
            Some(p) => p.forward(&FeatureMap::Dense(filled), plain)?.to_dense(),
            None => Ok(filled),
        }
    }
}

impl Module for Densify {
    fn visit(&self, p: &str, f: &mut dyn FnMut(&str, &Tensor, Kind)) {
        for (i, n) in self.norms.iter().enumerate() {
            n.visit(&join(p, &format!("densify_norms.{i}")), f);
        }
        for (i, c) in self.projs.iter().enumerate() {
            if let Some(c) = c {
                c.visit(&join(p, &format!("densify_projs.{i}")), f);
            }
        }
        for (i, t) in self.mask_tokens.iter().enumerate() {
            f(&join(p, &format!("mask_tokens.{i}")), t, Kind::Param);
        }
    }
    fn visit_mut(&mut self, p: &str, f: &mut dyn FnMut(&str, &mut Tensor, Kind)) {
        for (i, n) in self.norms.iter_mut().enumerate() {
            n.visit_mut(&join(p, &format!("densify_norms.{i}")), f);
        }
        for (i, c) in self.projs.iter_mut().enumerate() {
            if let Some(c) = c {
                c.visit_mut(&join(p, &format!("densify_projs.{i}")), f);
            }
        }
        for (i, t) in self.mask_tokens.iter_mut().enumerate() {
            f(&join(p, &format!("mask_tokens.{i}")), t, Kind::Param);
        }
    }
    fn set_training(&mut self, t: bool) {
        self.norms.iter_mut().for_each(|n| n.set_training(t));
    }
}

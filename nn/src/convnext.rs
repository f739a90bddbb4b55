//! ConvNeXt V1 (official facebookresearch layout and names) and V2 (GRN, no layer scale),
//! written once over `FeatureMap` so it runs dense or sparse.

use spark_engine::{Conv2dParams, Error, Result, Rng, Tensor};

use crate::backbone::{Backbone, BackboneConfig};
use crate::feature::{Ctx, FeatureMap};
use crate::init::{Builder, Init};
use crate::layers::{Conv2d, DropPath, GlobalAvgPool, Grn, LayerNorm, Linear, LnLayout, Sequential, WeightInit};
use crate::module::{join, Kind, Layer, Module};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvNeXtVariant {
    /// Layer scale 1e-6, no GRN.
    V1,
    /// GRN after the GELU, no layer scale.
    V2,
}

const LN_EPS: f64 = 1e-6;
const INIT: WeightInit = WeightInit::TruncNormal(0.02);

/// dwconv 7x7 -> LN (channels last) -> Linear C->4C -> GELU -> [GRN] -> Linear 4C->C -> [x gamma]
/// -> drop-path -> residual add.
pub struct ConvNeXtBlock {
    pub dwconv: Conv2d,
    pub norm: LayerNorm,
    pub pwconv1: Linear,
    pub grn: Option<Grn>,
    pub pwconv2: Linear,
    pub gamma: Option<Tensor>,
    pub drop_path: DropPath,
}

impl ConvNeXtBlock {
    pub fn new(dim: usize, v: ConvNeXtVariant, dpr: f64, b: &mut Builder) -> Result<ConvNeXtBlock> {
        let dw = Conv2dParams::new(1, 3).with_groups(dim);
        Ok(ConvNeXtBlock {
            dwconv: Conv2d::new(dim, dim, 7, dw, true, INIT, b)?,
            norm: LayerNorm::new(dim, LN_EPS, LnLayout::ChannelsLast, b)?,
            pwconv1: Linear::new(dim, 4 * dim, true, INIT, b)?,
            grn: if v == ConvNeXtVariant::V2 { Some(Grn::new(4 * dim, b)?) } else { None },
            pwconv2: Linear::new(4 * dim, dim, true, INIT, b)?,
            gamma: if v == ConvNeXtVariant::V1 { Some(b.param(&[dim], Init::Const(1e-6))?) } else { None },
            drop_path: DropPath::new(dpr)?,
        })
    }
    /// LN … layer scale on dense channels-last `[B, H, W, C]` (GRN over all sites), or on
    /// sparse rows `[N, C]` when there is no GRN.
    /// `grn_mask` (`[B, H, W, 1]`, dense simulation only) zeroes masked sites before GRN so
    /// its statistics cover visible sites, as the sparse path's do ([MM] instead lets GRN see
    /// the masked sites' GELU(bias) values).
    fn pointwise(&self, t: &Tensor, grn_mask: Option<&Tensor>) -> Result<Tensor> {
        let y = self.norm.forward_tensor(t)?;
        let y = self.pwconv1.forward_tensor(&y)?.gelu()?;
        let y = match (&self.grn, grn_mask) {
            (Some(g), Some(m)) => g.forward_tensor(&y.mul(m)?)?,
            (Some(g), None) => g.forward_tensor(&y)?,
            (None, _) => y,
        };
        let y = self.pwconv2.forward_tensor(&y)?;
        match &self.gamma {
            Some(g) => y.mul(g),
            None => Ok(y),
        }
    }
}

impl Module for ConvNeXtBlock {
    // PyTorch's state_dict lists a module's own parameters (gamma) before its children.
    fn visit(&self, p: &str, f: &mut dyn FnMut(&str, &Tensor, Kind)) {
        if let Some(g) = &self.gamma {
            f(&join(p, "gamma"), g, Kind::Param);
        }
        self.dwconv.visit(&join(p, "dwconv"), f);
        self.norm.visit(&join(p, "norm"), f);
        self.pwconv1.visit(&join(p, "pwconv1"), f);
        if let Some(g) = &self.grn {
            g.visit(&join(p, "grn"), f);
        }
        self.pwconv2.visit(&join(p, "pwconv2"), f);
    }
    fn visit_mut(&mut self, p: &str, f: &mut dyn FnMut(&str, &mut Tensor, Kind)) {
        if let Some(g) = &mut self.gamma {
            f(&join(p, "gamma"), g, Kind::Param);
        }
        self.dwconv.visit_mut(&join(p, "dwconv"), f);
        self.norm.visit_mut(&join(p, "norm"), f);
        self.pwconv1.visit_mut(&join(p, "pwconv1"), f);
        if let Some(g) = &mut self.grn {
            g.visit_mut(&join(p, "grn"), f);
        }
        self.pwconv2.visit_mut(&join(p, "pwconv2"), f);
    }
    fn set_training(&mut self, t: bool) {
        self.drop_path.set_training(t);
    }
}

impl Layer for ConvNeXtBlock {
    fn forward(&self, x: &FeatureMap, ctx: &mut Ctx) -> Result<FeatureMap> {
        let y = self.dwconv.forward(x, ctx)?;
        let y = match &y {
            FeatureMap::Dense(t) => {
                let cl = t.permute(&[0, 2, 3, 1])?;
                let m = match (&self.grn, ctx.mask_like(t)?) {
                    (Some(_), Some(m)) => Some(m.permute(&[0, 2, 3, 1])?),
                    _ => None,
                };
                let z = self.pointwise(&cl, m.as_ref())?.permute(&[0, 3, 1, 2])?;
                // SparK re-masks here: the Linear biases make masked sites non-zero.
                FeatureMap::Dense(ctx.remask(z)?)
            }
            FeatureMap::Sparse(s) => {
                if self.grn.is_none() {
                    FeatureMap::Sparse(s.map_features(|f| self.pointwise(f, None))?)
                } else {
                    self.sparse_with_grn(&y, ctx)?
                }
            }
        };
        let y = self.drop_path.forward(&y, ctx)?;
        x.add(&y)
    }
}

impl ConvNeXtBlock {
    /// V2 on sparse features: GRN needs per-image statistics over active rows.
    fn sparse_with_grn(&self, y: &FeatureMap, ctx: &mut Ctx) -> Result<FeatureMap> {
        let grn = self.grn.as_ref().ok_or_else(|| Error::Msg("ConvNeXtBlock: no GRN".into()))?;
        let y = y.map(|f| self.pwconv1.forward_tensor(&self.norm.forward_tensor(f)?)?.gelu())?;
        let y = grn.forward(&y, ctx)?;
        y.map(|f| self.pwconv2.forward_tensor(f))
    }
}

/// Official ConvNeXt: `downsample_layers.{0..3}`, `stages.{0..3}.{b}`, then `norm` + `head`
/// (both absent when built without classes, as in SparK's encoder).
pub struct ConvNeXt {
    pub variant: ConvNeXtVariant,
    pub downsample_layers: Vec<Sequential>,
    pub stages: Vec<Sequential>,
    pub norm: Option<LayerNorm>,
    pub head: Option<Linear>,
    dims: Vec<usize>,
}

impl ConvNeXt {
    pub fn new(
        variant: ConvNeXtVariant,
        depths: &[usize; 4],
        dims: &[usize; 4],
        cfg: &BackboneConfig,
        rng: &mut Rng,
    ) -> Result<ConvNeXt> {
        let depths: Vec<usize> = cfg.depths.clone().unwrap_or(depths.to_vec());
        if depths.len() != 4 || depths.contains(&0) {
            return Err(Error::Msg(format!("ConvNeXt: depths must be 4 positive numbers, got {depths:?}")));
        }
        let dims: Vec<usize> = dims.iter().map(|&d| cfg.width(d)).collect();
        let mut b = cfg.builder(rng);
        let cf = LnLayout::ChannelsFirst;
        let mut downsample_layers = vec![Sequential::new()
            .push(Conv2d::new(3, dims[0], 4, Conv2dParams::new(4, 0), true, INIT, &mut b)?)
            .push(LayerNorm::new(dims[0], LN_EPS, cf, &mut b)?)];
        for i in 0..3 {
            downsample_layers.push(
                Sequential::new().push(LayerNorm::new(dims[i], LN_EPS, cf, &mut b)?).push(Conv2d::new(
                    dims[i],
                    dims[i + 1],
                    2,
                    Conv2dParams::new(2, 0),
                    true,
                    INIT,
                    &mut b,
                )?),
            );
        }
        // dp_rates = linspace(0, drop_path, sum(depths)).
        let total: usize = depths.iter().sum();
        let rate = |i: usize| if total > 1 { cfg.drop_path * i as f64 / (total - 1) as f64 } else { 0.0 };
        let mut stages = Vec::new();
        let mut idx = 0;
        for (s, &n) in depths.iter().enumerate() {
            let mut seq = Sequential::new();
            for _ in 0..n {
                seq = seq.push(ConvNeXtBlock::new(dims[s], variant, rate(idx), &mut b)?);
                idx += 1;
            }
            stages.push(seq);
        }
        let (norm, head) = if cfg.num_classes > 0 {
            (
                Some(LayerNorm::new(dims[3], LN_EPS, LnLayout::ChannelsLast, &mut b)?),
                Some(Linear::new(dims[3], cfg.num_classes, true, INIT, &mut b)?),
            )
        } else {
            (None, None)
        };
        Ok(ConvNeXt { variant, downsample_layers, stages, norm, head, dims })
    }
}

impl Module for ConvNeXt {
    fn visit(&self, p: &str, f: &mut dyn FnMut(&str, &Tensor, Kind)) {
        for (i, d) in self.downsample_layers.iter().enumerate() {
            d.visit(&join(p, &format!("downsample_layers.{i}")), f);
        }
        for (i, s) in self.stages.iter().enumerate() {
            s.visit(&join(p, &format!("stages.{i}")), f);
        }
        if let Some(n) = &self.norm {
            n.visit(&join(p, "norm"), f);
        }
        if let Some(h) = &self.head {
            h.visit(&join(p, "head"), f);
        }
    }
    fn visit_mut(&mut self, p: &str, f: &mut dyn FnMut(&str, &mut Tensor, Kind)) {
        for (i, d) in self.downsample_layers.iter_mut().enumerate() {
            d.visit_mut(&join(p, &format!("downsample_layers.{i}")), f);
        }
        for (i, s) in self.stages.iter_mut().enumerate() {
            s.visit_mut(&join(p, &format!("stages.{i}")), f);
        }
        if let Some(n) = &mut self.norm {
            n.visit_mut(&join(p, "norm"), f);
        }
        if let Some(h) = &mut self.head {
            h.visit_mut(&join(p, "head"), f);
        }
    }
    fn set_training(&mut self, t: bool) {
        self.stages.iter_mut().for_each(|s| s.set_training(t));
    }
}

impl Backbone for ConvNeXt {
    fn feature_channels(&self) -> Vec<usize> {
        self.dims.clone()
    }
    fn forward_features(&self, x: FeatureMap, ctx: &mut Ctx) -> Result<Vec<FeatureMap>> {
        let mut y = x;
        let mut out = Vec::with_capacity(4);
        for (d, s) in self.downsample_layers.iter().zip(&self.stages) {
            y = s.forward(&d.forward(&y, ctx)?, ctx)?;
            out.push(y.clone());
        }
        Ok(out)
    }
    fn forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let feats = self.forward_features(FeatureMap::Dense(x.clone()), ctx)?;
        let last = feats.last().ok_or_else(|| Error::Msg("ConvNeXt: no stages".into()))?;
        let pooled = GlobalAvgPool.forward(last, ctx)?.to_dense()?;
        match (&self.norm, &self.head) {
            (Some(n), Some(h)) => h.forward_tensor(&n.forward_tensor(&pooled)?),
            _ => Ok(pooled),
        }
    }
    fn num_features(&self) -> usize {
        self.dims[3]
    }
    fn num_classes(&self) -> usize {
        self.head.as_ref().map_or(0, |h| h.weight.dims()[0])
    }
}

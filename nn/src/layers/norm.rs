//! BatchNorm2d and LayerNorm. On sparse maps both see only the active rows: BN's statistics
//! are over active sites (SparK's SparseBatchNorm2d), LN normalises each active site.

use spark_engine::{DType, Result, Tensor};

use crate::feature::{Ctx, FeatureMap};
use crate::functional as F;
use crate::init::{Builder, Init};
use crate::module::{join, Kind, Layer, Module};
use crate::sparse_api;

/// `nn.BatchNorm2d` with PyTorch's state: weight, bias, running_mean, running_var and
/// num_batches_tracked (a scalar f64 buffer here, I64 in safetensors files).
pub struct BatchNorm2d {
    pub weight: Tensor,
    pub bias: Tensor,
    pub running_mean: Tensor,
    pub running_var: Tensor,
    pub num_batches_tracked: Tensor,
    pub momentum: f64,
    pub eps: f64,
    pub training: bool,
}

impl BatchNorm2d {
    /// weight 1, bias 0, momentum 0.1, eps 1e-5, training mode.
    pub fn new(c: usize, b: &mut Builder) -> Result<BatchNorm2d> {
        Self::with_weight_init(c, 1.0, b)
    }
    /// As `new` with the weight set to `gamma` (0 for timm's zero-init of a block's last BN).
    pub fn with_weight_init(c: usize, gamma: f64, b: &mut Builder) -> Result<BatchNorm2d> {
        let w_init = if gamma == 1.0 { Init::Ones } else { Init::Const(gamma) };
        Ok(BatchNorm2d {
            weight: b.param(&[c], w_init)?,
            bias: b.param(&[c], Init::Zeros)?,
            running_mean: b.buffer(&[c], Init::Zeros)?,
            running_var: b.buffer(&[c], Init::Ones)?,
            num_batches_tracked: Tensor::zeros(&[], DType::F64, b.device)?,
            momentum: 0.1,
            eps: 1e-5,
            training: true,
        })
    }
    fn count_batch(&self) -> Result<()> {
        self.num_batches_tracked.update::<f64>(|s| s.iter_mut().for_each(|v| *v += 1.0))
    }
}

impl Module for BatchNorm2d {
    fn visit(&self, p: &str, f: &mut dyn FnMut(&str, &Tensor, Kind)) {
        f(&join(p, "weight"), &self.weight, Kind::Param);
        f(&join(p, "bias"), &self.bias, Kind::Param);
        f(&join(p, "running_mean"), &self.running_mean, Kind::Buffer);
        f(&join(p, "running_var"), &self.running_var, Kind::Buffer);
        f(&join(p, "num_batches_tracked"), &self.num_batches_tracked, Kind::Buffer);
    }
    fn visit_mut(&mut self, p: &str, f: &mut dyn FnMut(&str, &mut Tensor, Kind)) {
        f(&join(p, "weight"), &mut self.weight, Kind::Param);
        f(&join(p, "bias"), &mut self.bias, Kind::Param);
        f(&join(p, "running_mean"), &mut self.running_mean, Kind::Buffer);
        f(&join(p, "running_var"), &mut self.running_var, Kind::Buffer);
        f(&join(p, "num_batches_tracked"), &mut self.num_batches_tracked, Kind::Buffer);
    }
    fn set_training(&mut self, t: bool) {
        self.training = t;
    }
}

impl Layer for BatchNorm2d {
    fn forward(&self, x: &FeatureMap, ctx: &mut Ctx) -> Result<FeatureMap> {
        let (w, b, rm, rv) = (&self.weight, &self.bias, &self.running_mean, &self.running_var);
        let out = match x {
            FeatureMap::Dense(t) if ctx.dense_mask.is_some() => {
                let m = ctx.mask_like(t)?.unwrap_or_else(|| unreachable!());
                let y = F::batch_norm_masked(t, &m, w, b, rm, rv, self.training, self.momentum, self.eps)?;
                FeatureMap::Dense(y)
            }
            FeatureMap::Dense(t) => FeatureMap::Dense(F::batch_norm(
                t,
                Some(w),
                Some(b),
                Some((rm, rv)),
                self.training,
                self.momentum,
                self.eps,
            )?),
            FeatureMap::Sparse(s) => FeatureMap::Sparse(sparse_api::sparse_batch_norm(
                s,
                Some(w),
                Some(b),
                Some(rm),
                Some(rv),
                self.training,
                self.momentum,
                self.eps,
            )?),
        };
        if self.training {
            self.count_batch()?;
        }
        Ok(out)
    }
}

/// Which axis a LayerNorm normalises on a dense map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LnLayout {
    /// The last dim (PyTorch `nn.LayerNorm`; `[B, H, W, C]` or `[B, C]`).
    ChannelsLast,
    /// Dim 1 of `[B, C, H, W]` (ConvNeXt's `LayerNorm(data_format="channels_first")`).
    ChannelsFirst,
}

/// LayerNorm over channels with affine weight 1 / bias 0.
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
    pub layout: LnLayout,
}

impl LayerNorm {
    pub fn new(c: usize, eps: f64, layout: LnLayout, b: &mut Builder) -> Result<LayerNorm> {
        Ok(LayerNorm { weight: b.param(&[c], Init::Ones)?, bias: b.param(&[c], Init::Zeros)?, eps, layout })
    }
    /// Normalises a dense tensor according to the layout.
    pub fn forward_tensor(&self, t: &Tensor) -> Result<Tensor> {
        match self.layout {
            LnLayout::ChannelsLast => F::layer_norm(t, Some(&self.weight), Some(&self.bias), self.eps),
            LnLayout::ChannelsFirst => F::layer_norm_channels_first(t, Some(&self.weight), Some(&self.bias), self.eps),
        }
    }
}

impl Module for LayerNorm {
    fn visit(&self, p: &str, f: &mut dyn FnMut(&str, &Tensor, Kind)) {
        f(&join(p, "weight"), &self.weight, Kind::Param);
        f(&join(p, "bias"), &self.bias, Kind::Param);
    }
    fn visit_mut(&mut self, p: &str, f: &mut dyn FnMut(&str, &mut Tensor, Kind)) {
        f(&join(p, "weight"), &mut self.weight, Kind::Param);
        f(&join(p, "bias"), &mut self.bias, Kind::Param);
    }
}

impl Layer for LayerNorm {
    fn forward(&self, x: &FeatureMap, ctx: &mut Ctx) -> Result<FeatureMap> {
        match x {
            // Dense simulation re-masks NCHW outputs (per-site LN equals sparse LN on active rows).
            FeatureMap::Dense(t) if self.layout == LnLayout::ChannelsFirst => {
                Ok(FeatureMap::Dense(ctx.remask(self.forward_tensor(t)?)?))
            }
            FeatureMap::Dense(t) => Ok(FeatureMap::Dense(self.forward_tensor(t)?)),
            // Sparse features are [N, C]: per-site LN is the same in both layouts.
            FeatureMap::Sparse(s) => Ok(FeatureMap::Sparse(sparse_api::sparse_layer_norm(
                s,
                Some(&self.weight),
                Some(&self.bias),
                self.eps,
            )?)),
        }
    }
}

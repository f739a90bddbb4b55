//! The SparK backbone contract and the factory that builds backbones by name.

use spark_engine::{DType, Error, Result, Rng, Tensor};

use crate::convnext::{ConvNeXt, ConvNeXtVariant};
use crate::feature::{Ctx, FeatureMap};
use crate::init::Builder;
use crate::module::Module;
use crate::resnet::ResNet;

/// What SparK needs from an encoder (SPARK.md 3.2).
pub trait Backbone: Module {
    /// Total stride of the deepest feature map (equals the mask patch size).
    fn downsample_ratio(&self) -> usize {
        32
    }
    /// Channels of each map returned by `forward_features`, largest resolution first.
    fn feature_channels(&self) -> Vec<usize>;
    /// The stride 4/8/16/32 maps, dense or sparse like the input.
    fn forward_features(&self, x: FeatureMap, ctx: &mut Ctx) -> Result<Vec<FeatureMap>>;
    /// Classifier forward on a dense `[B, 3, H, W]` image: logits `[B, num_classes]`, or the
    /// pooled features `[B, num_features]` when built without a head.
    fn forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor>;
    /// Width of the pooled features (the head's input).
    fn num_features(&self) -> usize;
    /// Classes of the head; 0 = no head.
    fn num_classes(&self) -> usize;
}

/// Options of `build_backbone`.
#[derive(Clone, Debug)]
pub struct BackboneConfig {
    /// Classifier outputs; 0 builds no head (and, for ConvNeXt, no final norm), as SparK does.
    pub num_classes: usize,
    /// Stochastic-depth rate of the deepest block (linearly increasing from 0).
    pub drop_path: f64,
    /// Multiplies every width (rounded, at least 1); 1.0 = the published model.
    pub width_mult: f64,
    /// Blocks per stage, replacing the named model's.
    pub depths: Option<Vec<usize>>,
    /// Parameter dtype.
    pub dtype: DType,
    /// timm ResNet's zero-init of each block's last BN weight (timm default: true).
    pub zero_init_last_bn: bool,
    /// Build without allocating weights (for counting parameters and listing names).
    pub shape_only: bool,
}

impl Default for BackboneConfig {
    fn default() -> Self {
        BackboneConfig {
            num_classes: 1000,
            drop_path: 0.0,
            width_mult: 1.0,
            depths: None,
            dtype: DType::F32,
            zero_init_last_bn: true,
            shape_only: false,
        }
    }
}

impl BackboneConfig {
    /// Without a classifier head (SparK pretraining).
    pub fn headless() -> Self {
        BackboneConfig { num_classes: 0, ..Default::default() }
    }
    pub(crate) fn width(&self, base: usize) -> usize {
        ((base as f64 * self.width_mult).round() as usize).max(1)
    }
    pub(crate) fn builder(&self, rng: &mut Rng) -> Builder {
        if self.shape_only {
            Builder::shape_only()
        } else {
            Builder::from_rng(rng.fork(), self.dtype)
        }
    }
}

/// Every name `build_backbone` accepts.
pub const BACKBONE_NAMES: &[&str] = &[
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnet200",
    "convnext_tiny",
    "convnext_small",
    "convnext_base",
    "convnext_large",
    "convnextv2_tiny",
    "convnextv2_small",
    "convnextv2_base",
];

/// Builds a backbone by name (`BACKBONE_NAMES`), seeded from `rng`.
pub fn build_backbone(name: &str, cfg: &BackboneConfig, rng: &mut Rng) -> Result<Box<dyn Backbone>> {
    use crate::resnet::BlockKind::{Basic, Bottleneck};
    let resnet = |kind, depths: [usize; 4], rng: &mut Rng| -> Result<Box<dyn Backbone>> {
        Ok(Box::new(ResNet::new(kind, &depths, cfg, rng)?))
    };
    let cnx = |v, depths: [usize; 4], dims: [usize; 4], rng: &mut Rng| -> Result<Box<dyn Backbone>> {
        Ok(Box::new(ConvNeXt::new(v, &depths, &dims, cfg, rng)?))
    };
    const T: [usize; 4] = [96, 192, 384, 768];
    const B: [usize; 4] = [128, 256, 512, 1024];
    const L: [usize; 4] = [192, 384, 768, 1536];
    match name {
        "resnet18" => resnet(Basic, [2, 2, 2, 2], rng),
        "resnet34" => resnet(Basic, [3, 4, 6, 3], rng),
        "resnet50" => resnet(Bottleneck, [3, 4, 6, 3], rng),
        "resnet101" => resnet(Bottleneck, [3, 4, 23, 3], rng),
        "resnet152" => resnet(Bottleneck, [3, 8, 36, 3], rng),
        "resnet200" => resnet(Bottleneck, [3, 24, 36, 3], rng),
        "convnext_tiny" => cnx(ConvNeXtVariant::V1, [3, 3, 9, 3], T, rng),
        "convnext_small" => cnx(ConvNeXtVariant::V1, [3, 3, 27, 3], T, rng),
        "convnext_base" => cnx(ConvNeXtVariant::V1, [3, 3, 27, 3], B, rng),
        "convnext_large" => cnx(ConvNeXtVariant::V1, [3, 3, 27, 3], L, rng),
        "convnextv2_tiny" => cnx(ConvNeXtVariant::V2, [3, 3, 9, 3], T, rng),
        "convnextv2_small" => cnx(ConvNeXtVariant::V2, [3, 3, 27, 3], T, rng),
        "convnextv2_base" => cnx(ConvNeXtVariant::V2, [3, 3, 27, 3], B, rng),
        _ => Err(Error::Msg(format!("unknown backbone '{name}'; valid names: {}", BACKBONE_NAMES.join(", ")))),
    }
}

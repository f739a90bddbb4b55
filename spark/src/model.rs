//! The SparK pretraining model (SPARK.md section 1): sparse encoder (any nn `Backbone` run on a
//! `FeatureMap::Sparse` input), densify, light decoder and the masked per-patch loss. The same
//! model also runs SparK's PyTorch semantics (dense ops + masks) for the equivalence proof.

use crate::decoder::{DecoderInit, LightDecoder};
use crate::densify::{Densify, DensifyNormKind};
use crate::loss::{masked_patch_loss, PatchTarget};
use crate::mask::PatchMask;
use serde::{Deserialize, Serialize};
use spark_engine::{DType, Error, Result, Rng, Tensor};
use spark_nn::feature::DenseMask;
use spark_nn::module::join;
use spark_nn::{
    build_backbone, Backbone, BackboneConfig, Builder, Ctx, FeatureMap, Kind, Module, SparseContext, SparseTensor,
};

/// Everything needed to rebuild a SparK model (stored as JSON in checkpoints).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SparkConfig {
    /// A name from `spark_nn::BACKBONE_NAMES`.
    pub backbone: String,
    pub width_mult: f64,
    pub depths: Option<Vec<usize>>,
    pub drop_path: f64,
    pub zero_init_last_bn: bool,
    pub input_size: usize,
    pub mask_ratio: f64,
    pub decoder_width: usize,
    pub densify_norm: DensifyNormKind,
    /// Official rule: the deepest projection is Identity when encoder and decoder widths match.
    pub identity_proj_when_equal: bool,
    pub decoder_init: DecoderInit,
    /// "f32" or "f64".
    pub dtype: String,
}

impl SparkConfig {
    /// The official configuration for a backbone: decoder 768, BN for ResNets / LN for ConvNeXts,
    /// SparK's drop-path defaults.
    pub fn official(backbone: &str) -> SparkConfig {
        let convnext = backbone.starts_with("convnext");
        let drop_path = match backbone {
            "resnet50" => 0.05,
            "resnet101" => 0.08,
            "resnet152" => 0.10,
            "resnet200" => 0.15,
            "convnext_small" => 0.2,
            "convnext_base" => 0.3,
            "convnext_large" => 0.4,
            _ => 0.0,
        };
        SparkConfig {
            backbone: backbone.to_string(),
            width_mult: 1.0,
            depths: None,
            drop_path,
            zero_init_last_bn: true,
            input_size: 224,
            mask_ratio: 0.6,
            decoder_width: 768,
            densify_norm: if convnext { DensifyNormKind::LayerNorm } else { DensifyNormKind::BatchNorm },
            identity_proj_when_equal: true,
            decoder_init: DecoderInit::Official,
            dtype: "f32".into(),
        }
    }

    /// mmpretrain's SparK: decoder 512 with Kaiming init, never an Identity projection.
    pub fn mmpretrain(backbone: &str) -> SparkConfig {
        SparkConfig {
            decoder_width: 512,
            identity_proj_when_equal: false,
            decoder_init: DecoderInit::Mmpretrain,
            ..Self::official(backbone)
        }
    }

    pub fn dtype(&self) -> Result<DType> {
        match self.dtype.as_str() {
            "f32" => Ok(DType::F32),
            "f64" => Ok(DType::F64),
            d => Err(Error::Msg(format!("SparkConfig: dtype `{d}` is not f32 or f64"))),
        }
    }

    fn backbone_config(&self, shape_only: bool) -> Result<BackboneConfig> {
        Ok(BackboneConfig {
            num_classes: 0,
            drop_path: self.drop_path,
            width_mult: self.width_mult,
            depths: self.depths.clone(),
            dtype: self.dtype()?,
            zero_init_last_bn: self.zero_init_last_bn,
            shape_only,
        })
    }
}

/// How the encoder runs: real sparse convolution over visible sites, or SparK's PyTorch
/// simulation (dense ops on the zero-filled image with every output re-masked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EncoderMode {
    Sparse,
    DenseMasked,
}

/// Output of one forward pass.
pub struct SparkOutput {
    pub loss: Tensor,
    /// `[B,3,H,W]` raw prediction (per-patch-normalised pixel space).
    pub rec: Tensor,
    pub per_patch_mse: Tensor,
    pub target: PatchTarget,
}

/// SparK: `sparse_encoder.sp_cnn`, `dense_decoder`, `densify_norms`, `densify_projs`, `mask_tokens`.
pub struct SparK {
    pub config: SparkConfig,
    pub encoder: Box<dyn Backbone>,
    pub densify: Densify,
    pub decoder: LightDecoder,
    /// Mask patch size = the encoder's downsample ratio.
    pub patch: usize,
}

impl SparK {
    /// Builds the model with weights drawn from `rng`.
    pub fn new(config: SparkConfig, rng: &mut Rng) -> Result<SparK> {
        Self::build(config, rng, false)
    }

    /// Builds shapes only (no weight memory): for parameter counts and names of big models.
    pub fn shape_only(config: SparkConfig) -> Result<SparK> {
        Self::build(config, &mut Rng::new(0), true)
    }

    fn build(config: SparkConfig, rng: &mut Rng, shape_only: bool) -> Result<SparK> {
        let encoder = build_backbone(&config.backbone, &config.backbone_config(shape_only)?, rng)?;
        let patch = encoder.downsample_ratio();
        if config.input_size == 0 || !config.input_size.is_multiple_of(patch) {
            return Err(Error::Msg(format!(
                "SparK: input size {} is not a positive multiple of the backbone's downsample ratio {patch}",
                config.input_size
            )));
        }
        let mut b = if shape_only { Builder::shape_only() } else { Builder::from_rng(rng.fork(), config.dtype()?) };
        let mut enc_widths = encoder.feature_channels();
        enc_widths.reverse();
        let densify = Densify::new(
            &enc_widths,
            config.decoder_width,
            config.densify_norm,
            config.identity_proj_when_equal,
            &mut b,
        )?;
        let decoder = LightDecoder::new(config.decoder_width, patch, config.decoder_init, &mut b)?;
        Ok(SparK { config, encoder, densify, decoder, patch })
    }

    /// Cells per side of the mask grid for square inputs of `input_size`.
    pub fn grid(&self) -> usize {
        self.config.input_size / self.patch
    }

    /// Samples a mask for a batch of `batch` images of the configured size.
    pub fn sample_mask(&self, batch: usize, rng: &mut Rng) -> Result<PatchMask> {
        PatchMask::sample(batch, self.grid(), self.grid(), self.config.mask_ratio, rng)
    }

    /// Encoder features deepest first, each dense-able; with the contexts used.
    fn encode(&self, x: &Tensor, mask: &PatchMask, mode: EncoderMode, seed: u64) -> Result<(Vec<FeatureMap>, Ctx)> {
        let d = x.dims();
        if d.len() != 4
            || d[1] != 3
            || d[2] != mask.fh * self.patch
            || d[3] != mask.fw * self.patch
            || d[0] != mask.batch
        {
            return Err(Error::Shape {
                op: "SparK::forward",
                msg: format!(
                    "image batch {d:?} does not fit a [{}, {}, {}] mask with patch {}",
                    mask.batch, mask.fh, mask.fw, self.patch
                ),
            });
        }
        let (input, mut ctx) = match mode {
            EncoderMode::Sparse => {
                let mut sc = SparseContext::hierarchical(&mask.active, mask.batch, mask.fh, mask.fw)?;
                let set = sc.active_set(d[0], d[2], d[3])?;
                let s = SparseTensor::from_dense(&x.detach(), set)?;
                (FeatureMap::Sparse(s), Ctx::with_sparse(seed, sc))
            }
            EncoderMode::DenseMasked => {
                let dm = DenseMask::new(&mask.active, mask.batch, mask.fh, mask.fw)?;
                (FeatureMap::Dense(mask.apply(&x.detach())?), Ctx::with_dense_mask(seed, dm))
            }
        };
        let mut feats = self.encoder.forward_features(input, &mut ctx)?;
        feats.reverse();
        Ok((feats, ctx))
    }

    /// Reconstruction `[B,3,H,W]` of the masked image (no loss).
    pub fn reconstruct(&self, x: &Tensor, mask: &PatchMask, mode: EncoderMode, rng: &mut Rng) -> Result<Tensor> {
        let seed = rng.next_u64();
        let (feats, mut ctx) = self.encode(x, mask, mode, seed)?;
        let mut plain = Ctx::new(seed ^ 0x5eed);
        let mut to_dec = Vec::with_capacity(feats.len());
        for (i, f) in feats.iter().enumerate() {
            let m = mask.to_tensor(mask.fh << i, mask.fw << i, x.dtype())?.to_device(x.device())?;
            to_dec.push(Some(self.densify.level(i, f, &m, &mut ctx, &mut plain)?));
        }
        self.decoder.forward(&to_dec, &mut plain)
    }

    /// One SparK forward: masked reconstruction and its loss over the masked patches.
    pub fn forward(&self, x: &Tensor, mask: &PatchMask, mode: EncoderMode, rng: &mut Rng) -> Result<SparkOutput> {
        let rec = self.reconstruct(x, mask, mode, rng)?;
        let out = masked_patch_loss(&rec, x, mask, self.patch)?;
        Ok(SparkOutput { loss: out.loss, rec, per_patch_mse: out.per_patch_mse, target: out.target })
    }

    /// The encoder's parameters and buffers under torchvision / official-ConvNeXt names (no
    /// `sparse_encoder.sp_cnn.` prefix, no decoder, no tokens).
    pub fn encoder_state(&self) -> Vec<(String, Tensor, Kind)> {
        self.encoder.state_dict()
    }
}

impl Module for SparK {
    fn visit(&self, p: &str, f: &mut dyn FnMut(&str, &Tensor, Kind)) {
        self.encoder.visit(&join(p, "sparse_encoder.sp_cnn"), f);
        self.decoder.visit(&join(p, "dense_decoder"), f);
        self.densify.visit(p, f);
    }
    fn visit_mut(&mut self, p: &str, f: &mut dyn FnMut(&str, &mut Tensor, Kind)) {
        self.encoder.visit_mut(&join(p, "sparse_encoder.sp_cnn"), f);
        self.decoder.visit_mut(&join(p, "dense_decoder"), f);
        self.densify.visit_mut(p, f);
    }
    fn set_training(&mut self, t: bool) {
        self.encoder.set_training(t);
        self.decoder.set_training(t);
        self.densify.set_training(t);
    }
}

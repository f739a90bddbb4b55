//! The official SparK and mmpretrain pretraining recipes (SPARK.md 7.1 / 7.2) as named values;
//! every field is public so any value can be overridden.

use super::{AdamW, AdamWConfig, CosineEnd, Lamb, LambConfig, LrSchedule, NoDecayRules, Optimizer, WdSchedule};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OptimizerKind {
    Lamb,
    AdamW,
}

/// A full pretraining recipe (optimizer, schedules, masking, decoder width, input size).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    pub name: String,
    /// Learning rate per `lr_ref_batch` images; peak = base_lr * batch / lr_ref_batch.
    pub base_lr: f64,
    pub lr_ref_batch: usize,
    pub batch_size: usize,
    pub epochs: usize,
    pub warmup_epochs: usize,
    pub optimizer: OptimizerKind,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Global grad-norm clip (inside LAMB; for AdamW an ordinary clip).
    pub max_grad_norm: Option<f64>,
    pub wd_start: f64,
    pub wd_end: f64,
    pub warmup_start_factor: f64,
    pub min_lr_factor: f64,
    pub cosine_end: CosineEnd,
    pub no_decay: NoDecayRules,
    pub mask_ratio: f64,
    pub decoder_width: usize,
    pub input_size: usize,
    /// RandomResizedCrop scale range.
    pub crop_scale: (f64, f64),
}

impl Recipe {
    /// Official SparK for ResNets: LAMB (0.9, 0.95), 2e-4 per 256 at batch 4096, 1600 epochs,
    /// 40 warmup, wd 0.04 -> 0.2, clip 5.0, mask 0.6, decoder 768, crop scale (0.67, 1).
    pub fn official() -> Self {
        Recipe {
            name: "official".into(),
            base_lr: 2e-4,
            lr_ref_batch: 256,
            batch_size: 4096,
            epochs: 1600,
            warmup_epochs: 40,
            optimizer: OptimizerKind::Lamb,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-6,
            max_grad_norm: Some(5.0),
            wd_start: 0.04,
            wd_end: 0.2,
            warmup_start_factor: 0.005,
            min_lr_factor: 0.001,
            cosine_end: CosineEnd::LastIter,
            no_decay: NoDecayRules::default(),
            mask_ratio: 0.6,
            decoder_width: 768,
            input_size: 224,
            crop_scale: (0.67, 1.0),
        }
    }

    /// Official SparK for ConvNeXts: as [`Recipe::official`] with beta2 0.999 (`--ada`).
    pub fn official_convnext() -> Self {
        Recipe { name: "official-convnext".into(), beta2: 0.999, ..Self::official() }
    }

    /// mmpretrain's SparK R50 800e: LAMB (0.9, 0.95), 2e-4 per 512 at 4096 (= 1.6e-3), internal clip
    /// 1.0, LinearLR warmup from 1e-4 over 40 epochs, cosine to 0, wd 0.04 -> 0.2, decoder 512,
    /// crop scale (0.2, 1), mask rules bias/flat/`mask_token`.
    pub fn mmpretrain() -> Self {
        Recipe {
            name: "mmpretrain".into(),
            base_lr: 2e-4,
            lr_ref_batch: 512,
            batch_size: 4096,
            epochs: 800,
            warmup_epochs: 40,
            optimizer: OptimizerKind::Lamb,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-6,
            max_grad_norm: Some(1.0),
            wd_start: 0.04,
            wd_end: 0.2,
            warmup_start_factor: 1e-4,
            min_lr_factor: 0.0,
            cosine_end: CosineEnd::Total,
            no_decay: NoDecayRules::mmpretrain(),
            mask_ratio: 0.6,
            decoder_width: 512,
            input_size: 224,
            crop_scale: (0.2, 1.0),
        }
    }

    /// A preset by name: `official`, `official-convnext`, `mmpretrain`.
    pub fn by_name(name: &str) -> Option<Self> {
        match name {
            "official" => Some(Self::official()),
            "official-convnext" => Some(Self::official_convnext()),
            "mmpretrain" => Some(Self::mmpretrain()),
            _ => None,
        }
    }

    pub fn peak_lr(&self) -> f64 {
        self.base_lr * self.batch_size as f64 / self.lr_ref_batch as f64
    }

    /// Learning-rate schedule for `iters_per_epoch` iterations per epoch.
    pub fn lr_schedule(&self, iters_per_epoch: usize) -> LrSchedule {
        LrSchedule {
            peak: self.peak_lr(),
            warmup_iters: (self.warmup_epochs as f64 * iters_per_epoch as f64).round() as usize,
            total_iters: self.epochs * iters_per_epoch,
            warmup_start_factor: self.warmup_start_factor,
            min_factor: self.min_lr_factor,
            cosine_end: self.cosine_end,
        }
    }

    pub fn wd_schedule(&self, iters_per_epoch: usize) -> WdSchedule {
        WdSchedule {
            start: self.wd_start,
            end: self.wd_end,
            total_iters: self.epochs * iters_per_epoch,
            cosine_end: self.cosine_end,
        }
    }

    /// The optimizer this recipe names, freshly initialised.
    pub fn build_optimizer(&self) -> Box<dyn Optimizer + Send> {
        match self.optimizer {
            OptimizerKind::Lamb => Box::new(Lamb::new(LambConfig {
                beta1: self.beta1,
                beta2: self.beta2,
                eps: self.eps,
                max_grad_norm: self.max_grad_norm,
                bias_correction: true,
            })),
            OptimizerKind::AdamW => Box::new(AdamW::new(AdamWConfig {
                beta1: self.beta1,
                beta2: self.beta2,
                eps: self.eps,
                max_grad_norm: self.max_grad_norm,
            })),
        }
    }
}

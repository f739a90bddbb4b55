//! spark-nn: layers, ResNet and ConvNeXt backbones that run dense or sparse (SparK's encoder
//! without a sparse copy of the model), and PyTorch-compatible safetensors weights.
//!
//! - `FeatureMap` is what flows between layers: `Dense([B, C, H, W])` or `Sparse(SparseTensor)`.
//! - `Ctx` carries the rng, the sparse context, and optionally SparK's dense-simulation mask.
//! - `Module` names parameters/buffers as PyTorch does; `Layer` adds the forward pass.
//! - `Backbone` is the SparK contract; `build_backbone` makes one by name.
//!
//! # Example: sparse features of a SparK-masked batch
//!
//! Build a backbone, load weights (here a fresh model's, saved and read back), and run the
//! encoder sparse on a patch mask (one flag per 32x32 cell, `true` = visible), as SparK's
//! pretraining does; `spark/examples/sparse_features.rs` is the same with a sampled mask.
//!
//! ```
//! use spark_engine::{Rng, Tensor};
//! use spark_nn::{build_backbone, load_safetensors, save_safetensors, BackboneConfig, Ctx, FeatureMap};
//! use spark_nn::{SparseContext, SparseTensor};
//!
//! # fn main() -> spark_engine::Result<()> {
//! // A narrow ResNet-18 without a head (SparK's encoder).
//! let cfg = BackboneConfig { width_mult: 0.125, depths: Some(vec![1, 1, 1, 1]), ..BackboneConfig::headless() };
//! let mut model = build_backbone("resnet18", &cfg, &mut Rng::new(0))?;
//! let path = std::env::temp_dir().join(format!("spark_nn_doc_{}.safetensors", std::process::id()));
//! save_safetensors(&*build_backbone("resnet18", &cfg, &mut Rng::new(1))?, &path)?;
//! let report = load_safetensors(&*model, &path, true)?; // strict: every key must match
//! assert!(report.is_clean());
//! # std::fs::remove_file(&path).ok();
//! model.eval();
//!
//! // Two 64x64 images: a 2x2 grid of 32-px cells each, `true` = visible.
//! let (batch, size) = (2, 64);
//! let patch_mask = [true, false, false, true, true, true, false, true];
//! let mut sc = SparseContext::hierarchical(&patch_mask, batch, size / 32, size / 32)?;
//! let active = sc.active_set(batch, size, size)?;
//! let x = Tensor::randn(&[batch, 3, size, size], 0.0, 1.0, &mut Rng::new(2), spark_engine::DType::F32, spark_engine::Device::Cpu)?;
//! let x = SparseTensor::from_dense(&x, active)?;
//!
//! let feats = model.forward_features(FeatureMap::Sparse(x), &mut Ctx::with_sparse(0, sc))?;
//! assert_eq!(feats.len(), 4); // strides 4, 8, 16, 32
//! for f in &feats {
//!     let FeatureMap::Sparse(s) = f else { unreachable!() };
//!     // [active sites, channels] and the dense shape they live in.
//!     println!("{:?} of {:?}", s.features.dims(), s.dims_dense());
//! }
//! # Ok(())
//! # }
//! ```

pub mod backbone;
pub mod convnext;
pub mod feature;
pub mod functional;
pub mod init;
pub mod layers;
pub mod module;
pub mod reference;
pub mod resnet;
mod sparse_api;
pub mod weights;

pub use backbone::{build_backbone, Backbone, BackboneConfig, BACKBONE_NAMES};
pub use convnext::{ConvNeXt, ConvNeXtBlock, ConvNeXtVariant};
pub use feature::{Ctx, DenseMask, FeatureMap};
pub use init::{Builder, Init};
pub use layers::*;
pub use module::{Kind, Layer, Module};
pub use resnet::{BlockKind, ResBlock, ResNet};
pub use spark_sparse::{ActiveSet, SparseContext, SparseTensor};
pub use weights::{load_safetensors, save_safetensors, LoadReport, ShapeMismatch, DEPRECATED_KEYS};

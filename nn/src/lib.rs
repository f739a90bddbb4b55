//! spark-nn: layers, ResNet and ConvNeXt backbones that run dense or sparse (SparK's encoder
//! without a sparse copy of the model), and PyTorch-compatible safetensors weights.
//!
//! - `FeatureMap` is what flows between layers: `Dense([B, C, H, W])` or `Sparse(SparseTensor)`.
//! - `Ctx` carries the rng, the sparse context, and optionally SparK's dense-simulation mask.
//! - `Module` names parameters/buffers as PyTorch does; `Layer` adds the forward pass.
//! - `Backbone` is the SparK contract; `build_backbone` makes one by name.

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
pub use weights::{load_safetensors, save_safetensors, LoadReport, ShapeMismatch};

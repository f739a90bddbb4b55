//! spark-sparse: submanifold sparse convolution over active pixels, with BatchNorm, LayerNorm
//! and pooling over active sites: the CPU engine of SparK's sparse encoder.
//!
//! - `ActiveSet`: the active sites of one scale (coordinates + O(1) index grid).
//! - `KernelMap`: the rulebook of one (input set, output set, window geometry).
//! - `SparseContext`: which sites a strided op outputs (SparK's hierarchical mask, or generic
//!   window dilation) and the per-forward caches of sets and kernel maps.
//! - `SparseTensor`: features `[N_active, C]` + its set; `from_dense` / `to_dense(_fill)`.
//! - Ops (all differentiable, f32 and f64): `sparse_conv2d` (submanifold, strided, grouped,
//!   depthwise), `sparse_batch_norm`, `sparse_layer_norm`, `sparse_max_pool2d`,
//!   `sparse_avg_pool2d`, `sparse_global_avg_pool`.
//!
//! Every op equals SparK's dense simulation (the dense op on the zero-filled input, then the
//! output multiplied by the output mask) at the active sites, forward and backward.

mod active;
pub mod bench;
mod context;
mod conv;
mod conv_fused;
pub mod conv_kernels;
pub mod conv_winograd;
mod kmap;
mod norm;
mod pool;
mod tensor;

pub use active::ActiveSet;
pub use context::SparseContext;
pub use conv::{conv_features, sparse_conv2d, sparse_conv2d_with, ConvAlgo};
pub use kmap::{KernelGeom, KernelMap};
pub use norm::{sparse_batch_norm, sparse_layer_norm};
pub use pool::{sparse_avg_pool2d, sparse_global_avg_pool, sparse_max_pool2d};
pub use spark_engine::Conv2dParams;
pub use tensor::SparseTensor;

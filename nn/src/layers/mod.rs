//! Layers: each accepts a dense or sparse `FeatureMap` and runs the matching op.
pub mod act;
pub mod conv;
pub mod drop;
pub mod grn;
pub mod linear;
pub mod norm;
pub mod pool;
pub mod seq;

pub use act::{ReLU, ReLU6, GELU};
pub use conv::{Conv2d, ConvTranspose2d, WeightInit};
pub use drop::{DropPath, Dropout};
pub use grn::Grn;
pub use linear::Linear;
pub use norm::{BatchNorm2d, LayerNorm, LnLayout};
pub use pool::{AvgPool2d, GlobalAvgPool, MaxPool2d};
pub use seq::Sequential;

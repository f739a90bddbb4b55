//! Layers: each accepts a dense or sparse `FeatureMap` and runs the matching op.

/// `Module` for a layer whose state is `weight` and an optional `bias` (PyTorch's names).
macro_rules! weight_bias_module {
    ($layer:ty) => {
        impl $crate::module::Module for $layer {
            fn visit(&self, p: &str, f: &mut dyn FnMut(&str, &Tensor, $crate::module::Kind)) {
                f(&$crate::module::join(p, "weight"), &self.weight, $crate::module::Kind::Param);
                if let Some(b) = &self.bias {
                    f(&$crate::module::join(p, "bias"), b, $crate::module::Kind::Param);
                }
            }
            fn visit_mut(&mut self, p: &str, f: &mut dyn FnMut(&str, &mut Tensor, $crate::module::Kind)) {
                f(&$crate::module::join(p, "weight"), &mut self.weight, $crate::module::Kind::Param);
                if let Some(b) = &mut self.bias {
                    f(&$crate::module::join(p, "bias"), b, $crate::module::Kind::Param);
                }
            }
        }
    };
}

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

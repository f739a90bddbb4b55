//! Parameter-free elementwise activations (the same op on dense maps and sparse features,
//! since f(0) = 0 keeps inactive sites empty).

use spark_engine::{Result, Tensor};

use crate::feature::{Ctx, FeatureMap};
use crate::module::{Kind, Layer, Module};

macro_rules! activation {
    ($name:ident, $method:ident, $doc:expr) => {
        #[doc = $doc]
        #[derive(Clone, Copy, Debug, Default)]
        pub struct $name;
        impl Module for $name {
            fn visit(&self, _: &str, _: &mut dyn FnMut(&str, &Tensor, Kind)) {}
            fn visit_mut(&mut self, _: &str, _: &mut dyn FnMut(&str, &mut Tensor, Kind)) {}
        }
        impl Layer for $name {
            fn forward(&self, x: &FeatureMap, _ctx: &mut Ctx) -> Result<FeatureMap> {
                x.map(|t| t.$method())
            }
        }
    };
}

activation!(ReLU, relu, "`nn.ReLU`.");
activation!(ReLU6, relu6, "`nn.ReLU6`.");
activation!(GELU, gelu, "`nn.GELU` (exact, erf form).");

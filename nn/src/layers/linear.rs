//! `nn.Linear` over the last dimension (dense) or over sparse features `[N, C]` directly.

use spark_engine::{Error, Result, Tensor};

use crate::feature::{Ctx, FeatureMap};
use crate::init::Builder;
use crate::layers::conv::WeightInit;
use crate::module::Layer;

/// weight `[out, in]`, bias `[out]`.
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn new(cin: usize, cout: usize, bias: bool, init: WeightInit, b: &mut Builder) -> Result<Linear> {
        let w_init = match init {
            WeightInit::TorchDefault => crate::init::Init::torch_default(cin),
            WeightInit::KaimingNormalFanOut => crate::init::Init::kaiming_normal_fan_out(&[cout, cin]),
            WeightInit::TruncNormal(s) => crate::init::Init::TruncNormal(s),
        };
        let b_init = match init {
            WeightInit::TorchDefault => crate::init::Init::torch_default(cin),
            _ => crate::init::Init::Zeros,
        };
        let weight = b.param(&[cout, cin], w_init)?;
        let bias = if bias { Some(b.param(&[cout], b_init)?) } else { None };
        Ok(Linear { weight, bias })
    }
    /// `x @ W^T + b` on the last dim of `x`.
    pub fn forward_tensor(&self, x: &Tensor) -> Result<Tensor> {
        let cin = self.weight.dims()[1];
        if x.dims().last() != Some(&cin) {
            return Err(Error::Shape {
                op: "Linear",
                msg: format!("input {:?} does not end in in_features {cin}", x.dims()),
            });
        }
        let y = x.matmul(&self.weight.t()?)?;
        match &self.bias {
            Some(b) => y.add(b),
            None => Ok(y),
        }
    }
}

weight_bias_module!(Linear);

impl Layer for Linear {
    fn forward(&self, x: &FeatureMap, _ctx: &mut Ctx) -> Result<FeatureMap> {
        x.map(|t| self.forward_tensor(t))
    }
}

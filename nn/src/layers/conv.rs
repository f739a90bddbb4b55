//! Conv2d (dense or sparse) and ConvTranspose2d (dense).

use spark_engine::{Conv2dParams, ConvTranspose2dParams, Error, Result, Tensor};

use crate::feature::{Ctx, FeatureMap};
use crate::functional as F;
use crate::init::{Builder, Init};
use crate::module::Layer;
use crate::sparse_api;

/// Weight initialisation of a conv or linear layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WeightInit {
    /// PyTorch's default (`kaiming_uniform_(a=sqrt(5))`, bias U(±1/sqrt(fan_in))).
    TorchDefault,
    /// `kaiming_normal_(mode="fan_out", nonlinearity="relu")`, bias 0 (torchvision/timm ResNet).
    KaimingNormalFanOut,
    /// `trunc_normal_(std)`, bias 0 (timm / ConvNeXt).
    TruncNormal(f64),
}

impl WeightInit {
    fn weight(self, shape: &[usize], fan_in: usize) -> Init {
        match self {
            WeightInit::TorchDefault => Init::torch_default(fan_in),
            WeightInit::KaimingNormalFanOut => Init::kaiming_normal_fan_out(shape),
            WeightInit::TruncNormal(s) => Init::TruncNormal(s),
        }
    }
    fn bias(self, fan_in: usize) -> Init {
        match self {
            WeightInit::TorchDefault => Init::torch_default(fan_in),
            _ => Init::Zeros,
        }
    }
}

/// `nn.Conv2d`: weight `[cout, cin/groups, k, k]`, optional bias `[cout]`.
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub params: Conv2dParams,
}

impl Conv2d {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cin: usize,
        cout: usize,
        kernel: usize,
        params: Conv2dParams,
        bias: bool,
        init: WeightInit,
        b: &mut Builder,
    ) -> Result<Conv2d> {
        let g = params.groups.max(1);
        if !cin.is_multiple_of(g) || !cout.is_multiple_of(g) {
            return Err(Error::Msg(format!("Conv2d: channels {cin}->{cout} not divisible by groups {g}")));
        }
        let shape = [cout, cin / g, kernel, kernel];
        let fan_in = cin / g * kernel * kernel;
        let weight = b.param(&shape, init.weight(&shape, fan_in))?;
        let bias = if bias { Some(b.param(&[cout], init.bias(fan_in))?) } else { None };
        Ok(Conv2d { weight, bias, params })
    }
    pub fn out_channels(&self) -> usize {
        self.weight.dims()[0]
    }
}

weight_bias_module!(Conv2d);

impl Layer for Conv2d {
    fn forward(&self, x: &FeatureMap, ctx: &mut Ctx) -> Result<FeatureMap> {
        match x {
            FeatureMap::Dense(t) => {
                let y = F::conv2d(t, &self.weight, self.bias.as_ref(), self.params)?;
                Ok(FeatureMap::Dense(ctx.remask(y)?))
            }
            FeatureMap::Sparse(s) => {
                let sc = ctx.sparse_ctx("Conv2d")?;
                Ok(FeatureMap::Sparse(sparse_api::sparse_conv2d(s, &self.weight, self.bias.as_ref(), self.params, sc)?))
            }
        }
    }
}

/// `nn.ConvTranspose2d` (dense only): weight `[cin, cout/groups, k, k]`.
pub struct ConvTranspose2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub params: ConvTranspose2dParams,
}

impl ConvTranspose2d {
    pub fn new(
        cin: usize,
        cout: usize,
        kernel: usize,
        params: ConvTranspose2dParams,
        bias: bool,
        init: WeightInit,
        b: &mut Builder,
    ) -> Result<ConvTranspose2d> {
        let g = params.groups.max(1);
        if !cin.is_multiple_of(g) || !cout.is_multiple_of(g) {
            return Err(Error::Msg(format!("ConvTranspose2d: channels {cin}->{cout} not divisible by groups {g}")));
        }
        let shape = [cin, cout / g, kernel, kernel];
        // PyTorch computes fan_in from weight dim 1 for transposed convs.
        let fan_in = cout / g * kernel * kernel;
        let weight = b.param(&shape, init.weight(&shape, fan_in))?;
        let bias = if bias { Some(b.param(&[cout], init.bias(fan_in))?) } else { None };
        Ok(ConvTranspose2d { weight, bias, params })
    }
}

weight_bias_module!(ConvTranspose2d);

impl Layer for ConvTranspose2d {
    fn forward(&self, x: &FeatureMap, _ctx: &mut Ctx) -> Result<FeatureMap> {
        let t = x.dense("ConvTranspose2d")?;
        Ok(FeatureMap::Dense(F::conv_transpose2d(t, &self.weight, self.bias.as_ref(), self.params)?))
    }
}

//! MaxPool2d, AvgPool2d and global average pooling (dense, or sparse over active sites).

use spark_engine::{Result, Tensor};

use crate::feature::{Ctx, FeatureMap};
use crate::functional as F;
use crate::module::{Kind, Layer, Module};
use crate::sparse_api;

/// `nn.MaxPool2d(kernel, stride, padding)`.
#[derive(Clone, Copy, Debug)]
pub struct MaxPool2d {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

/// `nn.AvgPool2d(kernel, stride, padding)` (padding counted in the divisor, as PyTorch).
#[derive(Clone, Copy, Debug)]
pub struct AvgPool2d {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

/// Mean over all spatial sites (dense) or over active sites (sparse): `[B, C]` as a dense map.
#[derive(Clone, Copy, Debug, Default)]
pub struct GlobalAvgPool;

macro_rules! no_state {
    ($t:ty) => {
        impl Module for $t {
            fn visit(&self, _: &str, _: &mut dyn FnMut(&str, &Tensor, Kind)) {}
            fn visit_mut(&mut self, _: &str, _: &mut dyn FnMut(&str, &mut Tensor, Kind)) {}
        }
    };
}
no_state!(MaxPool2d);
no_state!(AvgPool2d);
no_state!(GlobalAvgPool);

impl Layer for MaxPool2d {
    fn forward(&self, x: &FeatureMap, ctx: &mut Ctx) -> Result<FeatureMap> {
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        match x {
            FeatureMap::Dense(t) => Ok(FeatureMap::Dense(ctx.remask(F::max_pool2d(t, k, s, p)?)?)),
            FeatureMap::Sparse(x) => {
                let sc = ctx.sparse_ctx("MaxPool2d")?;
                Ok(FeatureMap::Sparse(sparse_api::sparse_max_pool2d(x, k, s, p, sc)?))
            }
        }
    }
}

impl Layer for AvgPool2d {
    fn forward(&self, x: &FeatureMap, ctx: &mut Ctx) -> Result<FeatureMap> {
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        match x {
            FeatureMap::Dense(t) => Ok(FeatureMap::Dense(ctx.remask(F::avg_pool2d(t, k, s, p)?)?)),
            FeatureMap::Sparse(x) => {
                let sc = ctx.sparse_ctx("AvgPool2d")?;
                Ok(FeatureMap::Sparse(sparse_api::sparse_avg_pool2d(x, k, s, p, sc)?))
            }
        }
    }
}

impl Layer for GlobalAvgPool {
    fn forward(&self, x: &FeatureMap, ctx: &mut Ctx) -> Result<FeatureMap> {
        match x {
            FeatureMap::Dense(t) => match ctx.mask_like(t)? {
                // Dense simulation: mean over visible sites, sum(x*m)/sum(m).
                Some(m) => {
                    let n = m.sum(&[2, 3], false)?.maximum_scalar(1.0)?;
                    Ok(FeatureMap::Dense(t.mul(&m)?.sum(&[2, 3], false)?.div(&n)?))
                }
                None => Ok(FeatureMap::Dense(F::global_avg_pool2d(t)?)),
            },
            FeatureMap::Sparse(s) => Ok(FeatureMap::Dense(sparse_api::sparse_global_avg_pool(s)?)),
        }
    }
}

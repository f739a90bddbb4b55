//! SparK's LightDecoder (SPARK.md section 5): log2(ratio) UNet blocks
//! `ConvTranspose 4x4/s2 -> conv3x3 -> BN -> ReLU6 -> conv3x3 -> BN`, widths halving from `width`,
//! skip features added at the input of the first blocks, then a 1x1 conv to 3 channels.

use serde::{Deserialize, Serialize};
use spark_engine::{Conv2dParams, ConvTranspose2dParams, Error, Result, Tensor};
use spark_nn::module::join;
use spark_nn::{BatchNorm2d, Builder, Conv2d, ConvTranspose2d, Ctx, FeatureMap, Kind, Layer, Module, WeightInit};

/// Decoder initialisation: official SparK (Conv2d trunc-normal 0.02, ConvTranspose Kaiming) or
/// mmpretrain (Kaiming fan_out for both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DecoderInit {
    Official,
    Mmpretrain,
}

/// One UNet block; PyTorch names `up_sample.*`, `conv.0` (3x3), `conv.1` (BN), `conv.3` (3x3),
/// `conv.4` (BN).
pub struct UNetBlock {
    pub up_sample: ConvTranspose2d,
    pub conv0: Conv2d,
    pub bn1: BatchNorm2d,
    pub conv3: Conv2d,
    pub bn4: BatchNorm2d,
}

impl UNetBlock {
    pub fn new(cin: usize, cout: usize, init: DecoderInit, b: &mut Builder) -> Result<UNetBlock> {
        let conv_init = match init {
            DecoderInit::Official => WeightInit::TruncNormal(0.02),
            DecoderInit::Mmpretrain => WeightInit::KaimingNormalFanOut,
        };
        let up_sample = ConvTranspose2d::new(
            cin,
            cin,
            4,
            ConvTranspose2dParams::new(2, 1),
            true,
            WeightInit::KaimingNormalFanOut,
            b,
        )?;
        let p = Conv2dParams::new(1, 1);
        Ok(UNetBlock {
            up_sample,
            conv0: Conv2d::new(cin, cin, 3, p, false, conv_init, b)?,
            bn1: BatchNorm2d::new(cin, b)?,
            conv3: Conv2d::new(cin, cout, 3, p, false, conv_init, b)?,
            bn4: BatchNorm2d::new(cout, b)?,
        })
    }

    pub fn forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let x = FeatureMap::Dense(x.clone());
        let x = self.up_sample.forward(&x, ctx)?;
        let x = self.bn1.forward(&self.conv0.forward(&x, ctx)?, ctx)?.map(|t| t.relu6())?;
        let x = self.bn4.forward(&self.conv3.forward(&x, ctx)?, ctx)?;
        x.to_dense()
    }
}

impl Module for UNetBlock {
    fn visit(&self, p: &str, f: &mut dyn FnMut(&str, &Tensor, Kind)) {
        self.up_sample.visit(&join(p, "up_sample"), f);
        self.conv0.visit(&join(p, "conv.0"), f);
        self.bn1.visit(&join(p, "conv.1"), f);
        self.conv3.visit(&join(p, "conv.3"), f);
        self.bn4.visit(&join(p, "conv.4"), f);
    }
    fn visit_mut(&mut self, p: &str, f: &mut dyn FnMut(&str, &mut Tensor, Kind)) {
        self.up_sample.visit_mut(&join(p, "up_sample"), f);
        self.conv0.visit_mut(&join(p, "conv.0"), f);
        self.bn1.visit_mut(&join(p, "conv.1"), f);
        self.conv3.visit_mut(&join(p, "conv.3"), f);
        self.bn4.visit_mut(&join(p, "conv.4"), f);
    }
    fn set_training(&mut self, t: bool) {
        self.bn1.set_training(t);
        self.bn4.set_training(t);
    }
}

/// The light decoder: `dec.{i}` blocks and the final `proj`.
pub struct LightDecoder {
    pub width: usize,
    pub dec: Vec<UNetBlock>,
    pub proj: Conv2d,
}

impl LightDecoder {
    /// `upsample_ratio` must be a power of two (the encoder's downsample ratio, 32).
    pub fn new(width: usize, upsample_ratio: usize, init: DecoderInit, b: &mut Builder) -> Result<LightDecoder> {
        if !upsample_ratio.is_power_of_two() || upsample_ratio < 2 {
            return Err(Error::Msg(format!(
                "LightDecoder: upsample ratio {upsample_ratio} is not a power of two >= 2"
            )));
        }
        let n = upsample_ratio.trailing_zeros() as usize;
        if width >> n == 0 {
            return Err(Error::Msg(format!("LightDecoder: width {width} cannot be halved {n} times")));
        }
        let mut dec = Vec::with_capacity(n);
        for i in 0..n {
            dec.push(UNetBlock::new(width >> i, width >> (i + 1), init, b)?);
        }
        let proj_init = match init {
            DecoderInit::Official => WeightInit::TruncNormal(0.02),
            DecoderInit::Mmpretrain => WeightInit::KaimingNormalFanOut,
        };
        let proj = Conv2d::new(width >> n, 3, 1, Conv2dParams::new(1, 0), true, proj_init, b)?;
        Ok(LightDecoder { width, dec, proj })
    }

    /// `to_dec[i]` (deepest first; `None` = skipped) is added to the input of block i.
    pub fn forward(&self, to_dec: &[Option<Tensor>], ctx: &mut Ctx) -> Result<Tensor> {
        let mut x: Option<Tensor> = None;
        for (i, block) in self.dec.iter().enumerate() {
            if let Some(Some(f)) = to_dec.get(i) {
                x = Some(match x {
                    Some(x) => x.add(f)?,
                    None => f.clone(),
                });
            }
            let inp = x.ok_or_else(|| Error::Msg("LightDecoder: the deepest feature map is missing".into()))?;
            x = Some(block.forward(&inp, ctx)?);
        }
        let x = x.ok_or_else(|| Error::Msg("LightDecoder: no blocks".into()))?;
        self.proj.forward(&FeatureMap::Dense(x), ctx)?.to_dense()
    }
}

impl Module for LightDecoder {
    fn visit(&self, p: &str, f: &mut dyn FnMut(&str, &Tensor, Kind)) {
        for (i, d) in self.dec.iter().enumerate() {
            d.visit(&join(p, &format!("dec.{i}")), f);
        }
        self.proj.visit(&join(p, "proj"), f);
    }
    fn visit_mut(&mut self, p: &str, f: &mut dyn FnMut(&str, &mut Tensor, Kind)) {
        for (i, d) in self.dec.iter_mut().enumerate() {
            d.visit_mut(&join(p, &format!("dec.{i}")), f);
        }
        self.proj.visit_mut(&join(p, "proj"), f);
    }
    fn set_training(&mut self, t: bool) {
        self.dec.iter_mut().for_each(|d| d.set_training(t));
    }
}

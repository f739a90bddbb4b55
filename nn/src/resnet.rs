//! ResNet (torchvision v1.5 layout and names; stride on the 3x3 conv), with timm's drop-path
//! schedule. Written once over `FeatureMap`, so it runs dense or sparse.

use spark_engine::{Conv2dParams, Error, Result, Rng, Tensor};

use crate::backbone::{Backbone, BackboneConfig};
use crate::feature::{Ctx, FeatureMap};
use crate::init::Builder;
use crate::layers::{BatchNorm2d, Conv2d, DropPath, GlobalAvgPool, Linear, MaxPool2d, Sequential, WeightInit};
use crate::module::{join, Kind, Layer, Module};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    Basic,
    Bottleneck,
}

impl BlockKind {
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

fn conv(cin: usize, cout: usize, k: usize, stride: usize, b: &mut Builder) -> Result<Conv2d> {
    Conv2d::new(cin, cout, k, Conv2dParams::new(stride, k / 2), false, WeightInit::KaimingNormalFanOut, b)
}

/// One residual block; `convs[i]`/`bns[i]` are `conv{i+1}`/`bn{i+1}`.
pub struct ResBlock {
    pub convs: Vec<Conv2d>,
    pub bns: Vec<BatchNorm2d>,
    pub downsample: Option<Sequential>,
    pub drop_path: DropPath,
}

impl ResBlock {
    fn new(
        kind: BlockKind,
        cin: usize,
        planes: usize,
        stride: usize,
        dpr: f64,
        cfg: &BackboneConfig,
        b: &mut Builder,
    ) -> Result<ResBlock> {
        let cout = planes * kind.expansion();
        let last_gamma = if cfg.zero_init_last_bn { 0.0 } else { 1.0 };
        let (convs, bns) = match kind {
            BlockKind::Basic => (
                vec![conv(cin, planes, 3, stride, b)?, conv(planes, planes, 3, 1, b)?],
                vec![BatchNorm2d::new(planes, b)?, BatchNorm2d::with_weight_init(planes, last_gamma, b)?],
            ),
            BlockKind::Bottleneck => (
                vec![conv(cin, planes, 1, 1, b)?, conv(planes, planes, 3, stride, b)?, conv(planes, cout, 1, 1, b)?],
                vec![
                    BatchNorm2d::new(planes, b)?,
                    BatchNorm2d::new(planes, b)?,
                    BatchNorm2d::with_weight_init(cout, last_gamma, b)?,
                ],
            ),
        };
        // torchvision builds the shortcut after the residual branch (state_dict order).
        let downsample = if stride != 1 || cin != cout {
            Some(Sequential::new().push(conv(cin, cout, 1, stride, b)?).push(BatchNorm2d::new(cout, b)?))
        } else {
            None
        };
        Ok(ResBlock { convs, bns, downsample, drop_path: DropPath::new(dpr)? })
    }
}

impl Module for ResBlock {
    fn visit(&self, p: &str, f: &mut dyn FnMut(&str, &Tensor, Kind)) {
        for (i, (c, n)) in self.convs.iter().zip(&self.bns).enumerate() {
            c.visit(&join(p, &format!("conv{}", i + 1)), f);
            n.visit(&join(p, &format!("bn{}", i + 1)), f);
        }
        if let Some(d) = &self.downsample {
            d.visit(&join(p, "downsample"), f);
        }
    }
    fn visit_mut(&mut self, p: &str, f: &mut dyn FnMut(&str, &mut Tensor, Kind)) {
        for (i, (c, n)) in self.convs.iter_mut().zip(&mut self.bns).enumerate() {
            c.visit_mut(&join(p, &format!("conv{}", i + 1)), f);
            n.visit_mut(&join(p, &format!("bn{}", i + 1)), f);
        }
        if let Some(d) = &mut self.downsample {
            d.visit_mut(&join(p, "downsample"), f);
        }
    }
    fn set_training(&mut self, t: bool) {
        self.bns.iter_mut().for_each(|n| n.set_training(t));
        if let Some(d) = &mut self.downsample {
            d.set_training(t);
        }
        self.drop_path.set_training(t);
    }
}

impl Layer for ResBlock {
    fn forward(&self, x: &FeatureMap, ctx: &mut Ctx) -> Result<FeatureMap> {
        let last = self.convs.len() - 1;
        let mut y = x.clone();
        for (i, (c, n)) in self.convs.iter().zip(&self.bns).enumerate() {
            y = n.forward(&c.forward(&y, ctx)?, ctx)?;
            if i < last {
                y = y.map(|t| t.relu())?;
            }
        }
        y = self.drop_path.forward(&y, ctx)?;
        let shortcut = match &self.downsample {
            Some(d) => d.forward(x, ctx)?,
            None => x.clone(),
        };
        y.add(&shortcut)?.map(|t| t.relu())
    }
}

/// torchvision `ResNet`: conv1, bn1, relu, maxpool, layer1..4, avgpool, fc.
pub struct ResNet {
    pub kind: BlockKind,
    pub conv1: Conv2d,
    pub bn1: BatchNorm2d,
    pub maxpool: MaxPool2d,
    pub layers: Vec<Sequential>,
    pub fc: Option<Linear>,
    channels: Vec<usize>,
}

impl ResNet {
    pub fn new(kind: BlockKind, depths: &[usize; 4], cfg: &BackboneConfig, rng: &mut Rng) -> Result<ResNet> {
        let depths: Vec<usize> = cfg.depths.clone().unwrap_or(depths.to_vec());
        if depths.len() != 4 || depths.contains(&0) {
            return Err(Error::Msg(format!("ResNet: depths must be 4 positive numbers, got {depths:?}")));
        }
        let mut b = cfg.builder(rng);
        let stem = cfg.width(64);
        let conv1 = Conv2d::new(3, stem, 7, Conv2dParams::new(2, 3), false, WeightInit::KaimingNormalFanOut, &mut b)?;
        let bn1 = BatchNorm2d::new(stem, &mut b)?;
        let total: usize = depths.iter().sum();
        let mut idx = 0;
        let mut cin = stem;
        let mut layers = Vec::new();
        let mut channels = Vec::new();
        for (s, &n) in depths.iter().enumerate() {
            let planes = cfg.width(64 << s);
            let mut seq = Sequential::new();
            for i in 0..n {
                let stride = if s > 0 && i == 0 { 2 } else { 1 };
                // timm: block_dpr = drop_path_rate * block_idx / (num_blocks - 1).
                let dpr = if total > 1 { cfg.drop_path * idx as f64 / (total - 1) as f64 } else { 0.0 };
                seq = seq.push(ResBlock::new(kind, cin, planes, stride, dpr, cfg, &mut b)?);
                cin = planes * kind.expansion();
                idx += 1;
            }
            layers.push(seq);
            channels.push(cin);
        }
        let fc = if cfg.num_classes > 0 {
            Some(Linear::new(cin, cfg.num_classes, true, WeightInit::TorchDefault, &mut b)?)
        } else {
            None
        };
        Ok(ResNet { kind, conv1, bn1, maxpool: MaxPool2d { kernel: 3, stride: 2, padding: 1 }, layers, fc, channels })
    }
}

impl Module for ResNet {
    fn visit(&self, p: &str, f: &mut dyn FnMut(&str, &Tensor, Kind)) {
        self.conv1.visit(&join(p, "conv1"), f);
        self.bn1.visit(&join(p, "bn1"), f);
        for (i, l) in self.layers.iter().enumerate() {
            l.visit(&join(p, &format!("layer{}", i + 1)), f);
        }
        if let Some(fc) = &self.fc {
            fc.visit(&join(p, "fc"), f);
        }
    }
    fn visit_mut(&mut self, p: &str, f: &mut dyn FnMut(&str, &mut Tensor, Kind)) {
        self.conv1.visit_mut(&join(p, "conv1"), f);
        self.bn1.visit_mut(&join(p, "bn1"), f);
        for (i, l) in self.layers.iter_mut().enumerate() {
            l.visit_mut(&join(p, &format!("layer{}", i + 1)), f);
        }
        if let Some(fc) = &mut self.fc {
            fc.visit_mut(&join(p, "fc"), f);
        }
    }
    fn set_training(&mut self, t: bool) {
        self.bn1.set_training(t);
        self.layers.iter_mut().for_each(|l| l.set_training(t));
    }
}

impl Backbone for ResNet {
    fn feature_channels(&self) -> Vec<usize> {
        self.channels.clone()
    }
    fn forward_features(&self, x: FeatureMap, ctx: &mut Ctx) -> Result<Vec<FeatureMap>> {
        let x = self.bn1.forward(&self.conv1.forward(&x, ctx)?, ctx)?.map(|t| t.relu())?;
        let mut y = self.maxpool.forward(&x, ctx)?;
        let mut out = Vec::with_capacity(4);
        for l in &self.layers {
            y = l.forward(&y, ctx)?;
            out.push(y.clone());
        }
        Ok(out)
    }
    fn forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let feats = self.forward_features(FeatureMap::Dense(x.clone()), ctx)?;
        let last = feats.last().ok_or_else(|| Error::Msg("ResNet: no stages".into()))?;
        let pooled = GlobalAvgPool.forward(last, ctx)?.to_dense()?;
        match &self.fc {
            Some(fc) => fc.forward_tensor(&pooled),
            None => Ok(pooled),
        }
    }
    fn num_features(&self) -> usize {
        *self.channels.last().unwrap_or(&0)
    }
    fn num_classes(&self) -> usize {
        self.fc.as_ref().map_or(0, |f| f.weight.dims()[0])
    }
}

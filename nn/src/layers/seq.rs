//! `nn.Sequential`: children named "0", "1", … in order.

use spark_engine::{Result, Tensor};

use crate::feature::{Ctx, FeatureMap};
use crate::module::{join, Kind, Layer, Module};

#[derive(Default)]
pub struct Sequential {
    pub layers: Vec<Box<dyn Layer>>,
}

impl Sequential {
    pub fn new() -> Sequential {
        Sequential { layers: Vec::new() }
    }
    pub fn push(mut self, l: impl Layer + 'static) -> Sequential {
        self.layers.push(Box::new(l));
        self
    }
    pub fn len(&self) -> usize {
        self.layers.len()
    }
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

impl Module for Sequential {
    fn visit(&self, p: &str, f: &mut dyn FnMut(&str, &Tensor, Kind)) {
        for (i, l) in self.layers.iter().enumerate() {
            l.visit(&join(p, &i.to_string()), f);
        }
    }
    fn visit_mut(&mut self, p: &str, f: &mut dyn FnMut(&str, &mut Tensor, Kind)) {
        for (i, l) in self.layers.iter_mut().enumerate() {
            l.visit_mut(&join(p, &i.to_string()), f);
        }
    }
    fn set_training(&mut self, t: bool) {
        self.layers.iter_mut().for_each(|l| l.set_training(t));
    }
}

impl Layer for Sequential {
    fn forward(&self, x: &FeatureMap, ctx: &mut Ctx) -> Result<FeatureMap> {
        let mut y = x.clone();
        for l in &self.layers {
            y = l.forward(&y, ctx)?;
        }
        Ok(y)
    }
}

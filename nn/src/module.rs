//! The `Module` abstraction: named parameters and buffers (PyTorch dotted names), train/eval
//! mode, and freezing. A parameter is a leaf `Tensor::to_variable()`; a frozen one is the same
//! storage as a plain (non-variable) tensor, so it gets no gradient and optimizers skip it.

use spark_engine::{Device, Error, Result, Tensor};

use crate::feature::{Ctx, FeatureMap};

/// What a named tensor is: a trainable parameter or a buffer (BN running stats, counters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Param,
    Buffer,
}

/// `prefix.name`, or `name` at the root.
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Anything that holds named tensors. Names follow PyTorch's `state_dict()` (for example
/// `layer1.0.conv1.weight`), in registration order.
pub trait Module: Send + Sync {
    /// Calls `f(name, tensor, kind)` for every parameter and buffer under `prefix`.
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, Kind));
    /// Same, with the handle replaceable (freezing swaps a variable for a plain tensor over the
    /// same storage).
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor, Kind));
    /// Switches train/eval behaviour (BatchNorm statistics, dropout, drop-path) recursively.
    fn set_training(&mut self, _training: bool) {}

    fn train(&mut self) {
        self.set_training(true)
    }
    fn eval(&mut self) {
        self.set_training(false)
    }

    /// Every parameter (frozen ones included), in `state_dict` order.
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut v = Vec::new();
        self.visit("", &mut |n, t, k| {
            if k == Kind::Param {
                v.push((n.to_string(), t.clone()))
            }
        });
        v
    }
    /// Parameters that receive gradients (not frozen).
    fn trainable_parameters(&self) -> Vec<(String, Tensor)> {
        self.named_parameters().into_iter().filter(|(_, t)| t.is_variable()).collect()
    }
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        let mut v = Vec::new();
        self.visit("", &mut |n, t, k| {
            if k == Kind::Buffer {
                v.push((n.to_string(), t.clone()))
            }
        });
        v
    }
    /// Parameters and buffers, as PyTorch's `state_dict()`.
    fn state_dict(&self) -> Vec<(String, Tensor, Kind)> {
        let mut v = Vec::new();
        self.visit("", &mut |n, t, k| v.push((n.to_string(), t.clone(), k)));
        v
    }
    /// Number of parameter elements (buffers excluded), as `sum(p.numel())` in PyTorch.
    fn num_parameters(&self) -> usize {
        let mut n = 0;
        self.visit("", &mut |_, t, k| {
            if k == Kind::Param {
                n += t.numel()
            }
        });
        n
    }
    /// Freezes (`frozen = true`) or unfreezes every parameter whose name satisfies `select`;
    /// returns how many changed state.
    fn set_frozen(&mut self, select: &dyn Fn(&str) -> bool, frozen: bool) -> usize {
        let mut changed = 0;
        self.visit_mut("", &mut |n, t, k| {
            if k == Kind::Param && select(n) && t.is_variable() == frozen {
                *t = if frozen { t.detach() } else { t.detach().to_variable() };
                changed += 1;
            }
        });
        changed
    }
    fn freeze(&mut self, select: &dyn Fn(&str) -> bool) -> usize {
        self.set_frozen(select, true)
    }
    fn unfreeze(&mut self, select: &dyn Fn(&str) -> bool) -> usize {
        self.set_frozen(select, false)
    }
    /// Moves every parameter and buffer to `device`; trainable parameters stay trainable,
    /// frozen ones frozen. BatchNorm's `num_batches_tracked` counters stay on the host: they are
    /// step counts (f64, which the CUDA backend does not store), not data of the computation.
    fn to_device(&mut self, device: Device) -> Result<()> {
        let mut failed: Option<Error> = None;
        self.visit_mut("", &mut |name, t, _| {
            if failed.is_some() || t.device() == device || name.ends_with("num_batches_tracked") {
                return;
            }
            match t.detach().to_device(device) {
                Ok(moved) => *t = if t.is_variable() { moved.to_variable() } else { moved },
                Err(e) => failed = Some(Error::Msg(format!("moving {name} {:?} to {device}: {e}", t.dims()))),
            }
        });
        failed.map_or(Ok(()), Err)
    }
    /// Names of frozen parameters.
    fn frozen_parameters(&self) -> Vec<String> {
        self.named_parameters().into_iter().filter(|(_, t)| !t.is_variable()).map(|(n, _)| n).collect()
    }
}

/// A module with a forward pass over a dense or sparse feature map.
pub trait Layer: Module {
    fn forward(&self, x: &FeatureMap, ctx: &mut Ctx) -> Result<FeatureMap>;
}

//! Optimizer moments keyed by parameter name (so checkpoints survive a rebuilt model).

use spark_engine::{with_float, Error, Result, Tensor};
use std::collections::BTreeMap;

/// First and second moments per parameter, plus the shared step counter.
#[derive(Debug, Clone, Default)]
pub struct Moments {
    pub step: u64,
    pub m: BTreeMap<String, Tensor>,
    pub v: BTreeMap<String, Tensor>,
}

impl Moments {
    /// The (m, v) pair for `name`, created as zeros shaped like `param` on first use.
    pub fn get_or_init(&mut self, name: &str, param: &Tensor) -> Result<(Tensor, Tensor)> {
        if !self.m.contains_key(name) {
            self.m.insert(name.to_string(), param.detach().zeros_like()?.contiguous()?);
            self.v.insert(name.to_string(), param.detach().zeros_like()?.contiguous()?);
        }
        let (m, v) = (self.m[name].clone(), self.v[name].clone());
        if m.dims() != param.dims() {
            return Err(Error::Shape {
                op: "optimizer state",
                msg: format!("moment of `{name}` has shape {:?}, parameter {:?}", m.dims(), param.dims()),
            });
        }
        Ok((m, v))
    }

    /// Named tensors for a checkpoint: `m.<param>` and `v.<param>`.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (k, t) in &self.m {
            out.push((format!("m.{k}"), t.clone()));
        }
        for (k, t) in &self.v {
            out.push((format!("v.{k}"), t.clone()));
        }
        out
    }

    /// Restores from tensors named as by [`Moments::named_tensors`].
    pub fn load_named(&mut self, step: u64, tensors: Vec<(String, Tensor)>) -> Result<()> {
        self.step = step;
        self.m.clear();
        self.v.clear();
        for (k, t) in tensors {
            if let Some(n) = k.strip_prefix("m.") {
                self.m.insert(n.to_string(), t.contiguous()?);
            } else if let Some(n) = k.strip_prefix("v.") {
                self.v.insert(n.to_string(), t.contiguous()?);
            } else {
                return Err(Error::Msg(format!("optimizer state: unexpected tensor `{k}`")));
            }
        }
        Ok(())
    }
}

/// Global L2 norm of all gradients, accumulated in f64.
pub fn global_grad_norm(grads: &[Option<Tensor>]) -> Result<f64> {
    let mut sq = 0.0f64;
    for g in grads.iter().flatten() {
        // Borrow the storage (no copy) and accumulate in f64.
        sq += with_float!(g.dtype(), "global_grad_norm", |T| g
            .with_slice::<T, f64>(|s| s.iter().map(|&x| x.to_f64() * x.to_f64()).sum::<f64>()))?;
    }
    Ok(sq.sqrt())
}

//! AdamW (PyTorch semantics: decoupled decay `p *= 1 - lr*wd`, bias-corrected moments), with an
//! optional global grad-norm clip.

use super::state::{global_grad_norm, Moments};
use super::{OptimParam, Optimizer, StepInfo};
use serde::{Deserialize, Serialize};
use spark_engine::{no_grad, with_float, GradStore, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub max_grad_norm: Option<f64>,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, max_grad_norm: None }
    }
}

#[derive(Debug, Clone, Default)]
pub struct AdamW {
    pub config: AdamWConfig,
    pub state: Moments,
}

impl AdamW {
    pub fn new(config: AdamWConfig) -> Self {
        AdamW { config, state: Moments::default() }
    }
}

impl Optimizer for AdamW {
    fn step(&mut self, params: &[OptimParam], grads: &GradStore, lr: f64, wd: f64) -> Result<StepInfo> {
        let c = self.config.clone();
        let gs: Vec<_> = params.iter().map(|p| grads.get(&p.tensor).cloned()).collect();
        let norm = global_grad_norm(&gs)?;
        let clip = match c.max_grad_norm {
            Some(m) => (norm / m).max(1.0),
            None => 1.0,
        };
        self.state.step += 1;
        let t = self.state.step as i32;
        let (bc1, bc2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
        no_grad(|| -> Result<()> {
            for (p, g) in params.iter().zip(&gs) {
                let Some(g) = g else { continue };
                let (m, v) = self.state.get_or_init(&p.name, &p.tensor)?;
                let decay = 1.0 - lr * wd * p.wd_scale;
                let g = g.to_dtype(p.tensor.dtype())?;
                with_float!(p.tensor.dtype(), "adamw", |T| {
                    let g = g.to_vec::<T>()?;
                    let (mut r1, mut r2) = (Ok(()), Ok(()));
                    m.update::<T>(|m| {
                        r1 = v.update::<T>(|v| {
                            r2 = p.tensor.update::<T>(|w| {
                                for i in 0..g.len() {
                                    let gi = g[i].to_f64() / clip;
                                    let mi = c.beta1 * m[i].to_f64() + (1.0 - c.beta1) * gi;
                                    let vi = c.beta2 * v[i].to_f64() + (1.0 - c.beta2) * gi * gi;
                                    m[i] = T::from_f64(mi);
                                    v[i] = T::from_f64(vi);
                                    let denom = vi.sqrt() / bc2.sqrt() + c.eps;
                                    w[i] = T::from_f64(w[i].to_f64() * decay - lr / bc1 * mi / denom);
                                }
                            });
                        });
                    })?;
                    r1?;
                    r2
                })?;
            }
            Ok(())
        })?;
        Ok(StepInfo { grad_norm: norm })
    }

    fn moments(&self) -> &Moments {
        &self.state
    }
    fn moments_mut(&mut self) -> &mut Moments {
        &mut self.state
    }
}

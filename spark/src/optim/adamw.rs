//! AdamW (PyTorch semantics: decoupled decay `p *= 1 - lr*wd`, bias-corrected moments), with an
//! optional global grad-norm clip.

use super::state::{Moments, ParamJob, StepStart};
use super::{OptimParam, Optimizer, StepInfo};
use rayon::prelude::*;
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
        let StepStart { jobs, norm, clip, t } = self.state.start_step(params, grads, c.max_grad_norm)?;
        let (bc1, bc2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
        // Parameters update independently once the clip factor is known: run them in parallel.
        jobs.par_iter().try_for_each(|j| {
            let decay = 1.0 - lr * wd * j.param.wd_scale;
            no_grad(|| adamw_update(&c, j, clip, (bc1, bc2), lr, decay))
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

/// One parameter's AdamW update (moments, decoupled decay, step), in place.
fn adamw_update(
    c: &AdamWConfig,
    j: &ParamJob<'_>,
    clip: f64,
    (bc1, bc2): (f64, f64),
    lr: f64,
    decay: f64,
) -> Result<()> {
    let (p, m, v) = (&j.param.tensor, &j.m, &j.v);
    let g = j.grad.to_dtype(p.dtype())?;
    with_float!(p.dtype(), "adamw", |T| {
        let g = g.to_vec::<T>()?;
        let (mut r1, mut r2) = (Ok(()), Ok(()));
        m.update::<T>(|m| {
            r1 = v.update::<T>(|v| {
                r2 = p.update::<T>(|w| {
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
    })
}

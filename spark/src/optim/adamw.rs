//! AdamW (PyTorch semantics: decoupled decay `p *= 1 - lr*wd`, bias-corrected moments), with an
//! optional global grad-norm clip.

use super::state::{par_update, Moments, ParamJob, StepStart};
use super::{OptimParam, Optimizer, StepInfo};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use spark_engine::cuda::AdamKind;
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
    fn step_with_norm(
        &mut self,
        params: &[OptimParam],
        grads: &GradStore,
        lr: f64,
        wd: f64,
        norm: Option<f64>,
    ) -> Result<StepInfo> {
        let c = self.config.clone();
        let StepStart { jobs, norm, clip, t } = self.state.start_step(params, grads, c.max_grad_norm, norm)?;
        let (bc1, bc2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
        // Parameters update independently once the clip factor is known: run them in parallel.
        jobs.par_iter()
            .try_for_each(|j| no_grad(|| adamw_update(&c, j, clip, (bc1, bc2), lr, wd * j.param.wd_scale)))?;
        Ok(StepInfo { grad_norm: norm })
    }

    fn moments(&self) -> &Moments {
        &self.state
    }
    fn moments_mut(&mut self) -> &mut Moments {
        &mut self.state
    }
}

/// One parameter's AdamW update (moments, decoupled decay, step), in place, in the parameter's
/// dtype as PyTorch computes it.
fn adamw_update(
    c: &AdamWConfig,
    j: &ParamJob<'_>,
    clip: f64,
    (bc1, bc2): (f64, f64),
    lr: f64,
    wd_p: f64,
) -> Result<()> {
    if !j.param.tensor.device().is_cpu() {
        return j.fused(AdamKind::AdamW, lr, (c.beta1, c.beta2, c.eps), wd_p, (bc1, bc2), clip);
    }
    let decay = 1.0 - lr * wd_p;
    with_float!(j.param.tensor.dtype(), "adamw", |T| {
        let f = T::from_f64;
        let (b1, b2, one_b1, one_b2) = (f(c.beta1), f(c.beta2), f(1.0 - c.beta1), f(1.0 - c.beta2));
        let (inv_clip, inv_sqrt_bc2, eps, step, decay) =
            (f(1.0 / clip), f(1.0 / bc2.sqrt()), f(c.eps), f(lr / bc1), f(decay));
        j.with_slices::<T>(|g, m, v, w| {
            par_update(g, m, v, w, |g, m, v, w| {
                let gi = g * inv_clip;
                *m = b1 * *m + one_b1 * gi;
                *v = b2 * *v + one_b2 * gi * gi;
                *w = *w * decay - step * *m / (v.sqrt() * inv_sqrt_bc2 + eps);
            });
        })
    })
}

//! LAMB exactly as SparK uses it (timm 0.5.4 Lamb + global grad norm; SPARK.md 7.1): global
//! grad-norm clip inside, Adam moments with bias correction, weight decay added to the update and
//! the trust ratio ||p||/||u|| applied only to decayed parameters.

use super::state::{Moments, StepStart};
use super::{OptimParam, Optimizer, StepInfo};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use spark_engine::{no_grad, with_float, GradStore, Result, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LambConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Global grad-norm clip threshold inside the optimizer (official 5.0, mmpretrain 1.0).
    pub max_grad_norm: Option<f64>,
    pub bias_correction: bool,
}

impl Default for LambConfig {
    fn default() -> Self {
        LambConfig { beta1: 0.9, beta2: 0.95, eps: 1e-6, max_grad_norm: Some(5.0), bias_correction: true }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Lamb {
    pub config: LambConfig,
    pub state: Moments,
}

impl Lamb {
    pub fn new(config: LambConfig) -> Self {
        Lamb { config, state: Moments::default() }
    }
}

impl Optimizer for Lamb {
    fn step(&mut self, params: &[OptimParam], grads: &GradStore, lr: f64, wd: f64) -> Result<StepInfo> {
        let c = self.config.clone();
        let StepStart { jobs, norm, clip, t } = self.state.start_step(params, grads, c.max_grad_norm)?;
        let (bc1, bc2) = if c.bias_correction { (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t)) } else { (1.0, 1.0) };
        // Parameters update independently once the clip factor is known: run them in parallel.
        jobs.par_iter().try_for_each(|j| {
            no_grad(|| lamb_update(&c, j.param, &j.grad, &j.m, &j.v, clip, (bc1, bc2), lr, wd * j.param.wd_scale))
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

/// One parameter's LAMB update (moments, weight decay, trust ratio, step), in place.
fn lamb_update(
    c: &LambConfig,
    p: &OptimParam,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    clip: f64,
    (bc1, bc2): (f64, f64),
    lr: f64,
    wd_p: f64,
) -> Result<()> {
    let g = g.to_dtype(p.tensor.dtype())?;
    with_float!(p.tensor.dtype(), "lamb", |T| {
        let g = g.to_vec::<T>()?;
        let mut u = vec![0f64; g.len()];
        let mut inner = Ok(());
        m.update::<T>(|m| {
            inner = v.update::<T>(|v| {
                for i in 0..g.len() {
                    let gi = g[i].to_f64() / clip;
                    let mi = c.beta1 * m[i].to_f64() + (1.0 - c.beta1) * gi;
                    let vi = c.beta2 * v[i].to_f64() + (1.0 - c.beta2) * gi * gi;
                    m[i] = T::from_f64(mi);
                    v[i] = T::from_f64(vi);
                    // Use the stored (rounded) moments, as the PyTorch code does.
                    let (mi, vi) = (m[i].to_f64(), v[i].to_f64());
                    u[i] = (mi / bc1) / (vi.sqrt() / bc2.sqrt() + c.eps);
                }
            });
        })?;
        inner?;
        p.tensor.update::<T>(|w| {
            if wd_p != 0.0 {
                for (ui, wi) in u.iter_mut().zip(w.iter()) {
                    *ui += wd_p * wi.to_f64();
                }
                let wn = w.iter().map(|x| x.to_f64() * x.to_f64()).sum::<f64>().sqrt();
                let un = u.iter().map(|x| x * x).sum::<f64>().sqrt();
                let r = if wn > 0.0 && un > 0.0 { wn / un } else { 1.0 };
                u.iter_mut().for_each(|x| *x *= r);
            }
            for (wi, ui) in w.iter_mut().zip(&u) {
                *wi = T::from_f64(wi.to_f64() - lr * ui);
            }
        })
    })
}

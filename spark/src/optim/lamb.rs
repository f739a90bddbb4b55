//! LAMB exactly as SparK uses it (timm 0.5.4 Lamb + global grad norm; SPARK.md 7.1): global
//! grad-norm clip inside, Adam moments with bias correction, weight decay added to the update and
//! the trust ratio ||p||/||u|| applied only to decayed parameters.

use super::state::{par_update, Moments, ParamJob, StepStart, CHUNK};
use super::{OptimParam, Optimizer, StepInfo};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use spark_engine::cuda::AdamKind;
use spark_engine::{no_grad, with_float, Float, GradStore, Result};

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
        let (bc1, bc2) = if c.bias_correction { (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t)) } else { (1.0, 1.0) };
        // Parameters update independently once the clip factor is known: run them in parallel.
        jobs.par_iter()
            .try_for_each(|j| no_grad(|| lamb_update(&c, j, clip, (bc1, bc2), lr, wd * j.param.wd_scale)))?;
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
#[allow(clippy::too_many_arguments)]
fn lamb_update(c: &LambConfig, j: &ParamJob<'_>, clip: f64, bc: (f64, f64), lr: f64, wd_p: f64) -> Result<()> {
    if !j.param.tensor.device().is_cpu() {
        return j.fused(AdamKind::Lamb, lr, (c.beta1, c.beta2, c.eps), wd_p, bc, clip);
    }
    with_float!(j.param.tensor.dtype(), "lamb", |T| {
        j.with_slices::<T>(|g, m, v, w| lamb_kernel(c, g, m, v, w, clip, bc, lr, wd_p))
    })
}

/// The element-wise LAMB step in the parameter's dtype, as PyTorch computes it. Pass 1 updates
/// the moments and (decayed parameters only) sums ||w||^2 and ||u||^2 per chunk; pass 2 applies
/// `w -= lr * r * u` with `u` recomputed from the stored moments (cheaper than keeping it).
#[allow(clippy::too_many_arguments)]
fn lamb_kernel<T: Float>(
    c: &LambConfig,
    g: &[T],
    m: &mut [T],
    v: &mut [T],
    w: &mut [T],
    clip: f64,
    (bc1, bc2): (f64, f64),
    lr: f64,
    wd: f64,
) {
    let f = T::from_f64;
    let (b1, b2, one_b1, one_b2) = (f(c.beta1), f(c.beta2), f(1.0 - c.beta1), f(1.0 - c.beta2));
    let (inv_clip, inv_bc1, inv_sqrt_bc2, eps, wdt) =
        (f(1.0 / clip), f(1.0 / bc1), f(1.0 / bc2.sqrt()), f(c.eps), f(wd));
    let direction = move |m: T, v: T, w: T| m * inv_bc1 / (v.sqrt() * inv_sqrt_bc2 + eps) + wdt * w;
    let moments = move |g: T, m: &mut T, v: &mut T| {
        let gi = g * inv_clip;
        *m = b1 * *m + one_b1 * gi;
        *v = b2 * *v + one_b2 * gi * gi;
    };
    if wd == 0.0 {
        // No decay: no trust ratio, so one pass does it all.
        let step = f(lr);
        par_update(g, m, v, w, |g, m, v, w| {
            moments(g, m, v);
            *w = *w - step * direction(*m, *v, *w);
        });
        return;
    }
    let sums: Vec<(f64, f64)> = m
        .par_chunks_mut(CHUNK)
        .zip(v.par_chunks_mut(CHUNK))
        .zip(w.par_chunks(CHUNK))
        .zip(g.par_chunks(CHUNK))
        .map(|(((m, v), w), g)| {
            let (mut wn, mut un) = (0.0f64, 0.0f64);
            for i in 0..m.len() {
                moments(g[i], &mut m[i], &mut v[i]);
                let (wi, ui) = (w[i].to_f64(), direction(m[i], v[i], w[i]).to_f64());
                wn += wi * wi;
                un += ui * ui;
            }
            (wn, un)
        })
        .collect();
    let (wn, un) = sums.iter().fold((0.0, 0.0), |(a, b), &(x, y)| (a + x, b + y));
    let (wn, un) = (wn.sqrt(), un.sqrt());
    let r = if wn > 0.0 && un > 0.0 { wn / un } else { 1.0 };
    let step = f(lr * r);
    w.par_chunks_mut(CHUNK).zip(m.par_chunks(CHUNK)).zip(v.par_chunks(CHUNK)).for_each(|((w, m), v)| {
        for i in 0..w.len() {
            w[i] = w[i] - step * direction(m[i], v[i], w[i]);
        }
    });
}

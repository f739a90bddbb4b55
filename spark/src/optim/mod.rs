//! Optimizers (LAMB, AdamW), no-decay parameter groups, lr / wd schedules and the recipe presets.

mod adamw;
mod groups;
mod lamb;
mod preset;
mod schedule;
mod state;

pub use adamw::{AdamW, AdamWConfig};
pub use groups::NoDecayRules;
pub use lamb::{Lamb, LambConfig};
pub use preset::{OptimizerKind, Recipe};
pub use schedule::{CosineEnd, LrSchedule, WdSchedule};
pub use state::{global_grad_norm, Moments};

use spark_engine::{GradStore, Result, Tensor};

/// A parameter as the optimizer sees it: its name (state key), the leaf tensor and its
/// weight-decay scale (0 for the no-decay group, 1 otherwise).
#[derive(Debug, Clone)]
pub struct OptimParam {
    pub name: String,
    pub tensor: Tensor,
    pub wd_scale: f64,
}

/// Builds the optimizer's parameter list from named parameters and no-decay rules.
pub fn optim_params(named: &[(String, Tensor)], rules: &NoDecayRules) -> Vec<OptimParam> {
    named
        .iter()
        .map(|(n, t)| OptimParam { name: n.clone(), tensor: t.clone(), wd_scale: rules.wd_scale(n, t.dims()) })
        .collect()
}

/// What one optimizer step reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepInfo {
    /// Global L2 norm of the gradients before clipping.
    pub grad_norm: f64,
}

/// A first-order optimizer with per-name moment state.
pub trait Optimizer {
    /// One update of every parameter that has a gradient in `grads`, with learning rate `lr` and
    /// weight decay `wd` (scaled per parameter by its `wd_scale`).
    fn step(&mut self, params: &[OptimParam], grads: &GradStore, lr: f64, wd: f64) -> Result<StepInfo> {
        self.step_with_norm(params, grads, lr, wd, None)
    }
    /// `step` with the global gradient norm of `params` already known (a caller that checked it
    /// for NaN hands it over instead of having every gradient read a second time).
    fn step_with_norm(
        &mut self,
        params: &[OptimParam],
        grads: &GradStore,
        lr: f64,
        wd: f64,
        norm: Option<f64>,
    ) -> Result<StepInfo>;
    fn moments(&self) -> &Moments;
    fn moments_mut(&mut self) -> &mut Moments;
}

#[cfg(test)]
mod tests;

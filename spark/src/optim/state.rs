//! Optimizer moments keyed by parameter name (so checkpoints survive a rebuilt model).

use super::OptimParam;
use rayon::prelude::*;
use spark_engine::cuda::{fused_adam_update, AdamKind, AdamStep};
use spark_engine::{Error, Float, GradStore, Result, Tensor};
use std::collections::BTreeMap;

/// First and second moments per parameter, plus the shared step counter.
#[derive(Debug, Clone, Default)]
pub struct Moments {
    pub step: u64,
    pub m: BTreeMap<String, Tensor>,
    pub v: BTreeMap<String, Tensor>,
}

impl Moments {
    /// The (m, v) pair for `name`, created as zeros shaped like `param` on first use. A moment
    /// that exists without its partner, or whose shape differs from the parameter's (a damaged
    /// or foreign checkpoint), is an error naming the key.
    pub fn get_or_init(&mut self, name: &str, param: &Tensor) -> Result<(Tensor, Tensor)> {
        match (self.m.get(name), self.v.get(name)) {
            (Some(m), Some(v)) => {
                for (which, t) in [("m", m), ("v", v)] {
                    if t.dims() != param.dims() {
                        return Err(Error::Shape {
                            op: "optimizer state",
                            msg: format!(
                                "moment `{which}.{name}` has shape {:?}, parameter {:?}",
                                t.dims(),
                                param.dims()
                            ),
                        });
                    }
                }
                Ok((m.clone(), v.clone()))
            }
            (None, None) => {
                let m = param.detach().zeros_like()?.contiguous()?;
                let v = param.detach().zeros_like()?.contiguous()?;
                self.m.insert(name.to_string(), m.clone());
                self.v.insert(name.to_string(), v.clone());
                Ok((m, v))
            }
            (Some(_), None) => Err(Error::Msg(format!("optimizer state: `m.{name}` has no matching `v.{name}`"))),
            (None, Some(_)) => Err(Error::Msg(format!("optimizer state: `v.{name}` has no matching `m.{name}`"))),
        }
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

    /// Restores from tensors named as by [`Moments::named_tensors`]. Every `m.<name>` needs its
    /// `v.<name>` with the same shape (and the reverse); a mismatch is an error naming the key.
    pub fn load_named(&mut self, step: u64, tensors: Vec<(String, Tensor)>) -> Result<()> {
        let (mut m, mut v) = (BTreeMap::new(), BTreeMap::new());
        for (k, t) in tensors {
            let (map, n) = if let Some(n) = k.strip_prefix("m.") {
                (&mut m, n)
            } else if let Some(n) = k.strip_prefix("v.") {
                (&mut v, n)
            } else {
                return Err(Error::Msg(format!("optimizer state: unexpected tensor `{k}`")));
            };
            if map.insert(n.to_string(), t.contiguous()?).is_some() {
                return Err(Error::Msg(format!("optimizer state: tensor `{k}` appears twice")));
            }
        }
        check_pairs(&m, &v)?;
        self.step = step;
        self.m = m;
        self.v = v;
        Ok(())
    }
}

/// Every first moment has a second moment of its shape and the reverse.
fn check_pairs(m: &BTreeMap<String, Tensor>, v: &BTreeMap<String, Tensor>) -> Result<()> {
    for (n, a) in m {
        let b = v.get(n).ok_or_else(|| Error::Msg(format!("optimizer state: `m.{n}` has no matching `v.{n}`")))?;
        if a.dims() != b.dims() {
            return Err(Error::Shape {
                op: "optimizer state",
                msg: format!("`m.{n}` has shape {:?} but `v.{n}` {:?}", a.dims(), b.dims()),
            });
        }
    }
    if let Some(n) = v.keys().find(|n| !m.contains_key(*n)) {
        return Err(Error::Msg(format!("optimizer state: `v.{n}` has no matching `m.{n}`")));
    }
    Ok(())
}

/// Global L2 norm of all gradients, accumulated in f64 (on the gradients' device).
pub fn global_grad_norm(grads: &[Option<Tensor>]) -> Result<f64> {
    let mut sq = 0.0f64;
    for g in grads.iter().flatten() {
        sq += g.sum_of_squares()?;
    }
    Ok(sq.sqrt())
}

/// One parameter's share of an Adam-family step: the parameter, its gradient and its moments.
pub struct ParamJob<'a> {
    pub param: &'a OptimParam,
    pub grad: Tensor,
    pub m: Tensor,
    pub v: Tensor,
}

/// What every Adam-family step starts with.
pub struct StepStart<'a> {
    /// Parameters that received a gradient, with their (created on first use) moments.
    pub jobs: Vec<ParamJob<'a>>,
    /// Global L2 norm of all gradients (before clipping).
    pub norm: f64,
    /// Divisor that clips the global norm to `max_grad_norm` (1 when no clip applies).
    pub clip: f64,
    /// The step count after this step (1 on the first step), for bias correction.
    pub t: i32,
}

impl ParamJob<'_> {
    /// This job's update by the engine's fused kernel (parameters on a CUDA device).
    pub fn fused(
        &self,
        kind: AdamKind,
        lr: f64,
        (beta1, beta2, eps): (f64, f64, f64),
        weight_decay: f64,
        (bias_c1, bias_c2): (f64, f64),
        clip: f64,
    ) -> Result<()> {
        let step = AdamStep { lr, beta1, beta2, eps, weight_decay, bias_c1, bias_c2, grad_scale: 1.0 / clip };
        fused_adam_update(kind, &self.param.tensor, &self.grad, &self.m, &self.v, &step)
    }

    /// Runs `f(grad, m, v, param)` on this job's gradient (in the parameter's dtype), moments and
    /// parameter as slices, the last three writable in place.
    pub fn with_slices<T: Float>(&self, f: impl FnOnce(&[T], &mut [T], &mut [T], &mut [T])) -> Result<()> {
        let g = self.grad.to_dtype(self.param.tensor.dtype())?;
        let (mut r_v, mut r_w) = (Ok(()), Ok(()));
        g.with_slice(|g: &[T]| {
            self.m.update::<T>(|m| {
                r_v = self.v.update::<T>(|v| r_w = self.param.tensor.update::<T>(|w| f(g, m, v, w)));
            })
        })??;
        r_v?;
        r_w
    }
}

/// Elements per parallel task of the optimizers' element-wise passes. Partial sums are kept per
/// chunk and added in order, so a step is deterministic whatever the thread count or stealing.
pub const CHUNK: usize = 1 << 15;

/// Applies `f(g, m, v, w)` to every element of a gradient, its two moments and the parameter,
/// in parallel chunks.
pub fn par_update<T: Float>(
    g: &[T],
    m: &mut [T],
    v: &mut [T],
    w: &mut [T],
    f: impl Fn(T, &mut T, &mut T, &mut T) + Sync,
) {
    m.par_chunks_mut(CHUNK)
        .zip(v.par_chunks_mut(CHUNK))
        .zip(w.par_chunks_mut(CHUNK))
        .zip(g.par_chunks(CHUNK))
        .for_each(|(((m, v), w), g)| {
            for i in 0..m.len() {
                f(g[i], &mut m[i], &mut v[i], &mut w[i]);
            }
        });
}

impl Moments {
    /// Gathers gradients and moments, computes the global norm (unless `known_norm` gives it)
    /// and the clip factor, and counts the step. The per-parameter updates that follow are
    /// independent and may run in parallel.
    pub fn start_step<'a>(
        &mut self,
        params: &'a [OptimParam],
        grads: &GradStore,
        max_grad_norm: Option<f64>,
        known_norm: Option<f64>,
    ) -> Result<StepStart<'a>> {
        let gs: Vec<_> = params.iter().map(|p| grads.get(&p.tensor).cloned()).collect();
        let norm = match known_norm {
            Some(n) => n,
            None => global_grad_norm(&gs)?,
        };
        let clip = max_grad_norm.map_or(1.0, |m| (norm / m).max(1.0));
        let mut jobs = Vec::with_capacity(params.len());
        for (param, g) in params.iter().zip(gs) {
            let Some(grad) = g else { continue };
            let (m, v) = self.get_or_init(&param.name, &param.tensor)?;
            jobs.push(ParamJob { param, grad, m, v });
        }
        self.step += 1;
        Ok(StepStart { jobs, norm, clip, t: self.step as i32 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spark_engine::Device;

    fn t(dims: &[usize]) -> Tensor {
        Tensor::zeros(dims, spark_engine::DType::F32, Device::Cpu).unwrap()
    }

    #[test]
    fn mismatched_moments_are_errors_naming_the_key() {
        let named = |keys: &[(&str, &[usize])]| keys.iter().map(|(k, d)| (k.to_string(), t(d))).collect::<Vec<_>>();
        let mut s = Moments::default();
        let e = s.load_named(1, named(&[("m.w", &[2]), ("v.x", &[2])])).unwrap_err().to_string();
        assert!(e.contains("`m.w`"), "{e}");
        let e = s.load_named(1, named(&[("m.w", &[2]), ("v.w", &[3])])).unwrap_err().to_string();
        assert!(e.contains("`v.w`") && e.contains("[3]"), "{e}");
        let e = s.load_named(1, named(&[("v.w", &[2])])).unwrap_err().to_string();
        assert!(e.contains("`v.w`"), "{e}");
        let e = s.load_named(1, named(&[("q.w", &[2])])).unwrap_err().to_string();
        assert!(e.contains("`q.w`"), "{e}");
        s.load_named(1, named(&[("m.w", &[2]), ("v.w", &[2])])).unwrap();
        let e = s.get_or_init("w", &t(&[3])).unwrap_err().to_string();
        assert!(e.contains("`m.w`") && e.contains("[3]"), "{e}");
        assert!(s.get_or_init("w", &t(&[2])).is_ok());
        // Built by hand (not through load_named): a lone moment is still an error, not a panic.
        s.v.clear();
        let e = s.get_or_init("w", &t(&[2])).unwrap_err().to_string();
        assert!(e.contains("`v.w`"), "{e}");
        s.m.clear();
        s.v.insert("w".into(), t(&[2]));
        let e = s.get_or_init("w", &t(&[2])).unwrap_err().to_string();
        assert!(e.contains("`v.w`"), "{e}");
    }
}

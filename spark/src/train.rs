//! The pretraining loop: gradient accumulation, per-iteration lr / wd schedules, LAMB or AdamW,
//! NaN/Inf detection, periodic atomic checkpoints, a stop flag, exact resume.
//!
//! Determinism: mask sampling and drop-path draw from one seeded `Rng` whose state is saved in
//! checkpoints; with a deterministic batch source the loss curve of `2N` steps equals `N` steps,
//! save, resume, `N` steps.

use crate::checkpoint::{self, CheckpointMeta};
use crate::model::{EncoderMode, SparK, SparkConfig};
use crate::optim::{optim_params, LrSchedule, OptimParam, Optimizer, Recipe, WdSchedule};
use serde::{Deserialize, Serialize};
use spark_engine::{Error, GradStore, MatmulPrecision, PrecisionScope, Result, Rng, Tensor};
use spark_nn::Module;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// A pretraining run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub model: SparkConfig,
    /// Optimizer, lr (peak = base_lr * batch_size / lr_ref_batch), betas, clip, wd range, no-decay
    /// rules. Its `epochs` / `warmup_epochs` are not used: the loop counts steps.
    pub recipe: Recipe,
    /// Optimizer steps of the whole run (the schedules' length).
    pub total_steps: usize,
    pub warmup_steps: usize,
    /// Micro-batches per optimizer step.
    pub accum_steps: usize,
    pub mode: EncoderMode,
    pub seed: u64,
    /// Where `last.safetensors` goes; None = no checkpoints.
    pub checkpoint_dir: Option<PathBuf>,
    /// Save every this many optimizer steps (0 = only at the end / on stop).
    pub checkpoint_every: usize,
    /// Precision of the convolutions' matrix products in forward and backward: `Bf16` is bf16
    /// autocast (operands rounded to bf16, f32 accumulation; everything else stays f32). Older
    /// checkpoints without the key ran in f32.
    #[serde(default, with = "precision_name")]
    pub precision: MatmulPrecision,
}

/// `MatmulPrecision` as its config spelling ("f32" / "bf16").
mod precision_name {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};
    use spark_engine::MatmulPrecision;

    pub fn serialize<S: Serializer>(p: &MatmulPrecision, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(p.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<MatmulPrecision, D::Error> {
        let name = String::deserialize(d)?;
        MatmulPrecision::parse(&name)
            .ok_or_else(|| D::Error::custom(format!("unknown precision `{name}` (f32 or bf16)")))
    }
}

impl TrainConfig {
    pub fn lr_schedule(&self) -> LrSchedule {
        LrSchedule {
            peak: self.recipe.peak_lr(),
            warmup_iters: self.warmup_steps,
            total_iters: self.total_steps,
            warmup_start_factor: self.recipe.warmup_start_factor,
            min_factor: self.recipe.min_lr_factor,
            cosine_end: self.recipe.cosine_end,
        }
    }
    pub fn wd_schedule(&self) -> WdSchedule {
        WdSchedule {
            start: self.recipe.wd_start,
            end: self.recipe.wd_end,
            total_iters: self.total_steps,
            cosine_end: self.recipe.cosine_end,
        }
    }
    pub fn checkpoint_path(&self) -> Option<PathBuf> {
        self.checkpoint_dir.as_ref().map(|d| d.join("last.safetensors"))
    }
}

/// Per-step report (for progress bars and JSON-lines logs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// 1-based index of the optimizer step just done.
    pub step: usize,
    /// Mean loss over the micro-batches.
    pub loss: f64,
    pub lr: f64,
    pub wd: f64,
    /// Global grad norm before clipping.
    pub grad_norm: f64,
    pub images: usize,
    pub images_per_sec: f64,
}

/// Why `run` returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    Finished,
    /// The stop flag was set (state saved when checkpoints are on).
    Stopped,
    /// The batch source ran dry.
    OutOfData,
}

/// Supplies ImageNet-normalised `[B,3,H,W]` batches; `None` when exhausted.
pub trait BatchSource {
    fn next_batch(&mut self) -> Option<Result<Tensor>>;
}

impl<I: Iterator<Item = Result<Tensor>>> BatchSource for I {
    fn next_batch(&mut self) -> Option<Result<Tensor>> {
        self.next()
    }
}

pub struct Trainer {
    pub config: TrainConfig,
    pub model: SparK,
    pub optimizer: Box<dyn Optimizer + Send>,
    params: Vec<OptimParam>,
    /// Optimizer steps done.
    pub step: usize,
    rng: Rng,
    pub last_loss: Option<f64>,
    /// The last checkpoint written (or resumed from) that holds a finite state.
    pub last_good_checkpoint: Option<PathBuf>,
}

impl Trainer {
    /// A fresh run: the model is initialised from `config.seed`.
    pub fn new(config: TrainConfig) -> Result<Trainer> {
        if config.accum_steps == 0 || config.total_steps == 0 {
            return Err(Error::Msg("TrainConfig: total_steps and accum_steps must be >= 1".into()));
        }
        if config.precision == MatmulPrecision::Bf16 && config.model.dtype()? != spark_engine::DType::F32 {
            return Err(Error::Msg(format!(
                "TrainConfig: bf16 autocast needs an f32 model, not dtype `{}` (it rounds f32 products)",
                config.model.dtype
            )));
        }
        let mut rng = Rng::new(config.seed);
        let mut model = SparK::new(config.model.clone(), &mut rng)?;
        model.train();
        let optimizer = config.recipe.build_optimizer();
        let params = optim_params(&model.trainable_parameters(), &config.recipe.no_decay);
        Ok(Trainer { config, model, optimizer, params, step: 0, rng, last_loss: None, last_good_checkpoint: None })
    }

    /// Continues a run from a checkpoint written by `save_checkpoint`.
    pub fn resume(path: &Path) -> Result<Trainer> {
        let (meta, model_state, optim_state) = checkpoint::read(path)?;
        let mut t = Trainer::new(meta.config.clone())?;
        checkpoint::load_model_state(&t.model, &model_state)?;
        t.optimizer.moments_mut().load_named(meta.optim_step, optim_state)?;
        t.step = meta.step;
        t.rng = checkpoint::rng_from(&meta);
        t.last_loss = meta.last_loss;
        t.last_good_checkpoint = Some(path.to_path_buf());
        Ok(t)
    }

    pub fn save_checkpoint(&mut self, path: &Path) -> Result<()> {
        let meta = CheckpointMeta {
            config: self.config.clone(),
            step: self.step,
            optim_step: self.optimizer.moments().step,
            rng_state: self.rng.state(),
            last_loss: self.last_loss,
        };
        checkpoint::save(path, &self.model, self.optimizer.as_ref(), &meta)?;
        self.last_good_checkpoint = Some(path.to_path_buf());
        Ok(())
    }

    fn save_if_configured(&mut self) -> Result<()> {
        if let Some(p) = self.config.checkpoint_path() {
            self.save_checkpoint(&p)?;
        }
        Ok(())
    }

    /// One optimizer step over `micro_batches` (normally `accum_steps` of them): the loss of each
    /// is divided by their number and gradients accumulate. Parameters are untouched when a loss
    /// or the gradient norm is not finite (the error says so and names the last good checkpoint).
    pub fn train_step(&mut self, micro_batches: &[Tensor]) -> Result<StepMetrics> {
        if micro_batches.is_empty() {
            return Err(Error::Msg("Trainer::train_step: no micro-batches".into()));
        }
        let t0 = Instant::now();
        let n = micro_batches.len() as f64;
        let mut grads = GradStore::new();
        let (mut loss_sum, mut images) = (0.0, 0usize);
        let autocast = PrecisionScope::new(self.config.precision);
        for x in micro_batches {
            let x = x.to_dtype(self.config.model.dtype()?)?;
            let mask = self.model.sample_mask(x.dims()[0], &mut self.rng)?;
            let out = self.model.forward(&x, &mask, self.config.mode, &mut self.rng)?;
            let l = out.loss.to_scalar()?;
            if !l.is_finite() {
                return Err(self.non_finite("loss", l));
            }
            loss_sum += l;
            images += x.dims()[0];
            out.loss.div_scalar(n)?.backward_into(&mut grads)?;
        }
        drop(autocast);
        let (lr, wd) = (self.config.lr_schedule().lr(self.step), self.config.wd_schedule().wd(self.step));
        let norm = crate::optim::global_grad_norm(
            &self.params.iter().map(|p| grads.get(&p.tensor).cloned()).collect::<Vec<_>>(),
        )?;
        if !norm.is_finite() {
            return Err(self.non_finite("gradient norm", norm));
        }
        let info = self.optimizer.step_with_norm(&self.params, &grads, lr, wd, Some(norm))?;
        self.step += 1;
        let loss = loss_sum / n;
        self.last_loss = Some(loss);
        let secs = t0.elapsed().as_secs_f64().max(1e-9);
        Ok(StepMetrics {
            step: self.step,
            loss,
            lr,
            wd,
            grad_norm: info.grad_norm,
            images,
            images_per_sec: images as f64 / secs,
        })
    }

    fn non_finite(&self, what: &str, v: f64) -> Error {
        let keep = match &self.last_good_checkpoint {
            Some(p) => format!("the last good checkpoint is {}", p.display()),
            None => "no checkpoint has been written yet".to_string(),
        };
        Error::Msg(format!(
            "training stopped: non-finite {what} ({v}) at step {}; parameters were not updated; {keep}",
            self.step + 1
        ))
    }

    /// Trains until `total_steps`, the stop flag, or the end of the data; reports every step to
    /// `on_step`; saves every `checkpoint_every` steps, at the end and on stop.
    pub fn run(
        &mut self,
        data: &mut dyn BatchSource,
        stop: &AtomicBool,
        on_step: &mut dyn FnMut(&StepMetrics),
    ) -> Result<StopReason> {
        while self.step < self.config.total_steps {
            if stop.load(Ordering::SeqCst) {
                self.save_if_configured()?;
                return Ok(StopReason::Stopped);
            }
            let mut micro = Vec::with_capacity(self.config.accum_steps);
            for _ in 0..self.config.accum_steps {
                match data.next_batch() {
                    Some(b) => micro.push(b?),
                    None => {
                        self.save_if_configured()?;
                        return Ok(StopReason::OutOfData);
                    }
                }
            }
            let m = self.train_step(&micro)?;
            on_step(&m);
            let every = self.config.checkpoint_every;
            if every > 0 && self.step.is_multiple_of(every) && self.step < self.config.total_steps {
                self.save_if_configured()?;
            }
        }
        self.save_if_configured()?;
        Ok(StopReason::Finished)
    }
}

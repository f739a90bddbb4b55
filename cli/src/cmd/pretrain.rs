//! `spark pretrain`: SparK masked-image pretraining. With no argument it runs the quick CPU
//! default (a quarter-width ResNet-18 at 96 px on the built-in photos, a few minutes on two
//! cores) and leaves a checkpoint, a reconstruction PNG, the metrics log and a loss plot in
//! `runs/pretrain`. `--preset official` / `--preset mmpretrain` switch to the paper's settings.

use crate::checkpoint;
use crate::common::{
    check_f64, check_step_memory, check_threads, compute_threads, out_of_range, setup_compute_device, setup_threads,
    StepSize,
};
use crate::config::{self, Flags};
use crate::error::{CliError, CliResult};
use crate::metrics::{read_records, MetricsLog, Record};
use crate::output::{same_file, write_atomic};
use crate::plot::loss_curve_svg;
use crate::progress;
use crate::run_lock::lock_run_folder;
use clap::Args;
use serde::{Deserialize, Serialize};
use spark::data::{Dataset, Loader, LoaderConfig, Transform};
use spark::optim::{OptimizerKind, Recipe};
use spark::{EncoderMode, SparkConfig, TrainConfig, Trainer};
use spark_engine::{bf16_native, MatmulPrecision};
use spark_nn::Module;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

#[derive(Args, Debug, Clone, Default)]
pub struct PretrainArgs {
    /// Settings preset. `quick` (the default) is sized for a laptop CPU: ResNet-18 at width x0.25,
    /// 96 px input (3x3 mask grid), decoder 128, batch 16, 300 LAMB steps at lr 8e-3, a few
    /// minutes on 2 cores. `official` = the SparK paper (ResNet-50, 224 px, decoder 768, batch
    /// 4096, LAMB 2e-4 x bs/256, 1600 epochs, crop scale 0.67-1); `mmpretrain` = mmpretrain's
    /// recipe (decoder 512, 2e-4 x bs/512, crop scale 0.2-1, 800 epochs). Flags override any value.
    #[arg(long)]
    pub preset: Option<String>,
    /// TOML file with any of the config keys (the `config.toml` a run saves is one); flags win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Encoder: resnet18/34/50/101/152/200, convnext_tiny/small/base/large, convnextv2_*.
    #[arg(long)]
    pub backbone: Option<String>,
    /// Multiplies every encoder width (1.0 = the published model).
    #[arg(long, allow_negative_numbers = true)]
    pub width_mult: Option<f64>,
    /// Square input size in pixels (a multiple of 32).
    #[arg(long)]
    pub input_size: Option<usize>,
    /// Fraction of the 32x32 patches hidden from the encoder.
    #[arg(long, allow_negative_numbers = true)]
    pub mask_ratio: Option<f64>,
    /// Light-decoder width (halves at each of its 5 levels; official 768, mmpretrain 512).
    #[arg(long)]
    pub decoder_width: Option<usize>,
    /// Images per optimizer step.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Train for this many epochs (passes over the data).
    #[arg(long, conflicts_with = "steps")]
    pub epochs: Option<usize>,
    /// Train for this many optimizer steps (overrides epochs).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Peak learning rate (default: base_lr x batch / lr_ref_batch of the preset).
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f64>,
    /// Linear warm-up length in steps.
    #[arg(long)]
    pub warmup_steps: Option<usize>,
    /// lamb or adamw.
    #[arg(long)]
    pub optimizer: Option<String>,
    /// Encoder execution: `sparse` (real sparse convolution) or `dense-masked` (PyTorch SparK's
    /// simulation: dense ops on the masked image, outputs re-masked).
    #[arg(long)]
    pub encoder: Option<String>,
    /// Training images: a folder (class sub-folders or flat), an IDX file, or `builtin`.
    #[arg(long)]
    pub data: Option<String>,
    /// Output folder for checkpoints, logs and pictures.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue from a checkpoint (default: <out>/last.safetensors).
    #[arg(long, value_name = "CHECKPOINT", num_args = 0..=1, default_missing_value = "")]
    pub resume: Option<String>,
    /// Replace the run already in --out (its checkpoint, config and metrics) with a new one.
    /// Without it (or --resume), a folder that holds a run is refused.
    #[arg(long)]
    pub overwrite: bool,
    /// Stop after this step (checkpoint saved, schedules unchanged); continue later with --resume.
    #[arg(long, value_name = "STEP")]
    pub stop_at: Option<usize>,
    /// Write a checkpoint every N steps (and always at the end).
    #[arg(long)]
    pub save_every: Option<usize>,
    /// Random seed (data order, augmentation, masks, initial weights).
    #[arg(long)]
    pub seed: Option<u64>,
}

/// The resolved settings of a pretraining run (saved as `config.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainConfig {
    pub preset: String,
    pub backbone: String,
    pub width_mult: f64,
    pub input_size: usize,
    pub mask_ratio: f64,
    pub decoder_width: usize,
    pub batch_size: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epochs: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    pub base_lr: f64,
    pub lr_ref_batch: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup_steps: Option<usize>,
    pub warmup_epochs: f64,
    pub optimizer: String,
    pub beta1: f64,
    pub beta2: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_grad_norm: Option<f64>,
    pub wd: f64,
    pub wd_end: f64,
    pub crop_scale: [f64; 2],
    pub encoder: String,
    /// f32 or bf16 (autocast of the convolutions' matrix products); absent in older runs = f32.
    #[serde(default = "f32_name")]
    pub precision: String,
    pub data: String,
    pub out: String,
    pub seed: u64,
    pub device: String,
    pub workers: usize,
    pub save_every: usize,
    pub reconstruction_images: usize,
}

fn f32_name() -> String {
    "f32".into()
}

impl PretrainConfig {
    /// Defaults of a preset.
    pub fn preset(name: &str) -> CliResult<PretrainConfig> {
        let (recipe, backbone, width, size, bs, steps, lr, warmup) = match name {
            // Sized for ~2 CPU cores: 9 mask cells per image, 300 steps of 16 images.
            // Warm-up: 10% of the steps (warmup_steps unset; see `run`).
            "quick" => (Recipe::official(), "resnet18", 0.25, 96, 16, Some(300), Some(8e-3), None),
            "official" => (Recipe::official(), "resnet50", 1.0, 224, 4096, None, None, None),
            "mmpretrain" => (Recipe::mmpretrain(), "resnet50", 1.0, 224, 4096, None, None, None),
            _ => {
                return Err(
                    CliError::usage(format!("unknown preset '{name}'")).hint("use quick, official or mmpretrain")
                )
            }
        };
        Ok(PretrainConfig {
            preset: name.into(),
            backbone: backbone.into(),
            width_mult: width,
            input_size: size,
            mask_ratio: recipe.mask_ratio,
            decoder_width: if name == "quick" { 128 } else { recipe.decoder_width },
            batch_size: bs,
            epochs: if steps.is_some() { None } else { Some(recipe.epochs) },
            steps,
            lr,
            base_lr: recipe.base_lr,
            lr_ref_batch: recipe.lr_ref_batch,
            warmup_steps: warmup,
            warmup_epochs: recipe.warmup_epochs as f64,
            optimizer: "lamb".into(),
            beta1: recipe.beta1,
            beta2: recipe.beta2,
            max_grad_norm: recipe.max_grad_norm,
            wd: recipe.wd_start,
            wd_end: recipe.wd_end,
            crop_scale: [recipe.crop_scale.0, recipe.crop_scale.1],
            encoder: "sparse".into(),
            precision: f32_name(),
            data: "builtin".into(),
            out: "runs/pretrain".into(),
            seed: 0,
            device: "cpu".into(),
            workers: 2,
            save_every: 100,
            reconstruction_images: 6,
        })
    }

    /// The settings of the run that wrote a checkpoint, from the training config it carries:
    /// everything that shapes the model and its schedules. The checkpoint does not record the
    /// data, the output folder, the device or the worker count: `data` is given, the others keep
    /// their defaults (flags override them as usual).
    fn from_checkpoint(t: &TrainConfig, data: String) -> CliResult<PretrainConfig> {
        let (m, r) = (&t.model, &t.recipe);
        let preset = if r.name == "mmpretrain" { "mmpretrain" } else { "official" };
        Ok(PretrainConfig {
            preset: preset.into(),
            backbone: m.backbone.clone(),
            width_mult: m.width_mult,
            input_size: m.input_size,
            mask_ratio: m.mask_ratio,
            decoder_width: m.decoder_width,
            batch_size: r.batch_size,
            epochs: None,
            steps: Some(t.total_steps),
            // `run` stores the peak lr as base_lr (at lr_ref_batch = batch_size).
            lr: Some(r.base_lr),
            base_lr: r.base_lr,
            lr_ref_batch: r.lr_ref_batch,
            warmup_steps: Some(t.warmup_steps),
            warmup_epochs: r.warmup_epochs as f64,
            optimizer: match r.optimizer {
                OptimizerKind::Lamb => "lamb",
                OptimizerKind::AdamW => "adamw",
            }
            .into(),
            beta1: r.beta1,
            beta2: r.beta2,
            max_grad_norm: r.max_grad_norm,
            wd: r.wd_start,
            wd_end: r.wd_end,
            crop_scale: [r.crop_scale.0, r.crop_scale.1],
            encoder: match t.mode {
                EncoderMode::Sparse => "sparse",
                EncoderMode::DenseMasked => "dense-masked",
            }
            .into(),
            precision: t.precision.name().into(),
            data,
            seed: t.seed,
            save_every: t.checkpoint_every,
            ..PretrainConfig::preset("quick")?
        })
    }

    fn recipe(&self) -> Recipe {
        if self.preset == "mmpretrain" {
            Recipe::mmpretrain()
        } else {
            Recipe::official()
        }
    }

    pub fn spark_config(&self) -> SparkConfig {
        let mut c = if self.preset == "mmpretrain" {
            SparkConfig::mmpretrain(&self.backbone)
        } else {
            SparkConfig::official(&self.backbone)
        };
        c.width_mult = self.width_mult;
        c.input_size = self.input_size;
        c.mask_ratio = self.mask_ratio;
        c.decoder_width = self.decoder_width;
        c
    }

    /// Checks every setting against its range (flags, config files and resumed configs alike),
    /// before anything is allocated or written. Errors name the flag (or config key) and range.
    fn validate(&self) -> CliResult<()> {
        let u = |m: String| Err(CliError::usage(m));
        if !spark_nn::BACKBONE_NAMES.contains(&self.backbone.as_str()) {
            return Err(CliError::usage(format!("unknown backbone '{}'", self.backbone))
                .hint(format!("valid names: {}", spark_nn::BACKBONE_NAMES.join(", "))));
        }
        if self.input_size == 0 || !self.input_size.is_multiple_of(32) {
            return Err(CliError::usage(format!("--input-size {} is not a positive multiple of 32", self.input_size))
                .hint("the mask patch is the encoder's total stride, 32 px; try 64, 96, 224"));
        }
        // Settings with a flag are named by it; the others by their config key.
        let f = |flag: &str, v: f64, lo, lo_open, hi, hi_open| {
            check_f64(flag, v, lo, lo_open, hi, hi_open).map_err(|e| e.hint(config_hint(flag)))
        };
        let inf = f64::INFINITY;
        f("--mask-ratio", self.mask_ratio, 0.0, true, 1.0, true)?;
        let grid = self.input_size / 32;
        if spark::mask::len_keep(grid, grid, self.mask_ratio) == 0 {
            return Err(CliError::usage(format!(
                "--mask-ratio {} masks all {} patches of a {grid}x{grid} grid (--input-size {})",
                self.mask_ratio,
                grid * grid,
                self.input_size
            ))
            .hint("lower --mask-ratio so that at least one patch stays visible"));
        }
        if self.batch_size < 2 {
            return Err(out_of_range("--batch-size", self.batch_size, ">= 2")
                .hint("batch norm needs at least 2 images per batch"));
        }
        f("--width-mult", self.width_mult, 0.0, true, inf, false)?;
        if self.decoder_width < 32 {
            return Err(out_of_range("--decoder-width", self.decoder_width, ">= 32 (it halves five times)")
                .hint(config_hint("--decoder-width")));
        }
        if let Some(lr) = self.lr {
            f("--lr", lr, 0.0, true, inf, false)?;
        }
        f("`base_lr`", self.base_lr, 0.0, true, inf, false)?;
        if self.lr_ref_batch == 0 {
            return Err(out_of_range("`lr_ref_batch`", 0, ">= 1").hint(config_hint("`lr_ref_batch`")));
        }
        f("`beta1`", self.beta1, 0.0, false, 1.0, true)?;
        f("`beta2`", self.beta2, 0.0, false, 1.0, true)?;
        if let Some(n) = self.max_grad_norm {
            f("`max_grad_norm`", n, 0.0, true, inf, false)?;
        }
        f("`wd`", self.wd, 0.0, false, inf, false)?;
        f("`wd_end`", self.wd_end, 0.0, false, inf, false)?;
        f("`warmup_epochs`", self.warmup_epochs, 0.0, false, inf, false)?;
        let [c0, c1] = self.crop_scale;
        if !(c0.is_finite() && c1.is_finite() && 0.0 < c0 && c0 <= c1 && c1 <= 1.0) {
            return Err(out_of_range("`crop_scale`", format!("[{c0}, {c1}]"), "[a, b] with 0 < a <= b <= 1")
                .hint(config_hint("`crop_scale`")));
        }
        if self.reconstruction_images == 0 || self.reconstruction_images > 64 {
            return Err(out_of_range("`reconstruction_images`", self.reconstruction_images, "in [1, 64]")
                .hint(config_hint("`reconstruction_images`")));
        }
        check_threads("--workers", self.workers, 0).map_err(|e| e.hint(config_hint("--workers")))?;
        if !["lamb", "adamw"].contains(&self.optimizer.as_str()) {
            return u(format!("--optimizer '{}': use lamb or adamw", self.optimizer));
        }
        if !["sparse", "dense-masked"].contains(&self.encoder.as_str()) {
            return u(format!("--encoder '{}': use sparse or dense-masked", self.encoder));
        }
        if MatmulPrecision::parse(&self.precision).is_none() {
            return u(format!("--precision '{}': use f32 or bf16", self.precision));
        }
        if self.steps == Some(0) {
            return Err(out_of_range("--steps", 0, ">= 1"));
        }
        if self.epochs == Some(0) {
            return Err(out_of_range("--epochs", 0, ">= 1"));
        }
        check_step_memory(&StepSize {
            backbone: &self.backbone,
            width_mult: self.width_mult,
            input_size: self.input_size,
            batch_size: self.batch_size,
            decoder_width: self.decoder_width,
            encoder_fraction: if self.encoder == "sparse" { 1.0 - self.mask_ratio } else { 1.0 },
        })
    }
}

/// Where an out-of-range setting can come from.
fn config_hint(name: &str) -> String {
    match name.strip_prefix("--") {
        Some(flag) => {
            format!("set by {name} or `{} = ...` in the --config file / the run's config.toml", flag.replace('-', "_"))
        }
        None => format!("{name} is set in the --config file (or the resumed run's config.toml)"),
    }
}

fn flags(a: &PretrainArgs, device: Option<String>, precision: Option<String>) -> CliResult<toml::Table> {
    let mut f = Flags::default();
    f.set("preset", a.preset.clone())
        .set("backbone", a.backbone.clone())
        .set("width_mult", a.width_mult)
        .set_usize("input_size", a.input_size)
        .set("mask_ratio", a.mask_ratio)
        .set_usize("decoder_width", a.decoder_width)
        .set_usize("batch_size", a.batch_size)
        .set("lr", a.lr)
        .set_usize("warmup_steps", a.warmup_steps)
        .set("optimizer", a.optimizer.clone())
        .set("encoder", a.encoder.clone())
        .set("precision", precision)
        .set("data", a.data.clone())
        .set("out", a.out.as_ref().map(|p| p.display().to_string()))
        .set_usize("save_every", a.save_every)
        .set_u64("seed", a.seed)
        .set("device", device);
    // --steps and --epochs replace each other.
    if a.steps.is_some() {
        f.set_usize("steps", a.steps);
        f.0.remove("epochs");
    }
    if a.epochs.is_some() {
        f.set_usize("epochs", a.epochs);
    }
    f.finish()
}

/// Preset -> config file -> flags. On resume the checkpoint's config replaces the preset.
/// `steps` and `epochs` replace each other: a layer that sets one clears the other.
fn resolve(
    a: &PretrainArgs,
    common: &crate::common::CommonOpts,
    resumed: Option<PretrainConfig>,
) -> CliResult<PretrainConfig> {
    let mut file = a.config.as_deref().map(config::read_file).transpose()?;
    let preset = a
        .preset
        .clone()
        .or_else(|| file.as_ref().and_then(|f| f.get("preset")).and_then(|v| v.as_str()).map(String::from))
        .unwrap_or_else(|| "quick".into());
    let is_resume = resumed.is_some();
    let mut defaults = match resumed {
        Some(c) => c,
        None => PretrainConfig::preset(&preset)?,
    };
    let mut fl = flags(a, common.device.clone(), common.precision.clone())?;
    if let Some(w) = common.workers {
        let w = i64::try_from(w).map_err(|_| out_of_range("--workers", w, &format!("<= {}", i64::MAX)))?;
        fl.insert("workers".into(), w.into());
    }
    let clears = |t: &toml::Table, d: &mut PretrainConfig| {
        if t.contains_key("epochs") && !t.contains_key("steps") {
            d.steps = None;
        }
        if t.contains_key("steps") && !t.contains_key("epochs") {
            d.epochs = None;
        }
    };
    if let Some(f) = file.as_mut() {
        clears(f, &mut defaults);
        f.remove("preset");
    }
    clears(&fl, &mut defaults);
    // Epochs set by the file but steps by a flag (or the reverse): the flag wins.
    if let Some(f) = file.as_mut() {
        if fl.contains_key("steps") {
            f.remove("epochs");
        }
        if fl.contains_key("epochs") {
            f.remove("steps");
        }
    }
    let mut cfg: PretrainConfig = config::resolve(&defaults, file.as_ref(), a.config.as_deref(), fl)?;
    cfg.preset = if is_resume { cfg.preset } else { preset };
    Ok(cfg)
}

pub fn run(a: PretrainArgs, common: crate::common::CommonOpts) -> CliResult<()> {
    // Resume: the run folder's config.toml is the base of the settings (flags still override).
    let resume_path = a.resume.as_ref().map(|r| {
        if r.is_empty() {
            a.out.clone().unwrap_or_else(|| PathBuf::from("runs/pretrain")).join(checkpoint::FILE)
        } else {
            PathBuf::from(r)
        }
    });
    let resumed_cfg = match &resume_path {
        Some(p) => {
            if !p.exists() {
                return Err(CliError::usage(format!("cannot resume: {} does not exist", p.display()))
                    .hint("resume needs the run's --out folder (or --resume PATH to its last.safetensors)"));
            }
            Some(resumed_config(p, &a)?)
        }
        None => None,
    };
    let cfg = resolve(&a, &common, resumed_cfg)?;
    cfg.validate()?;
    setup_threads(common.threads)?;
    // The sparse encoder runs on the CPU only, so `auto` picks the CPU for it.
    let device = if cfg.encoder == "sparse" && cfg.device.trim() == "auto" {
        spark_engine::Device::Cpu
    } else {
        setup_compute_device(&cfg.device)?
    };
    if !device.is_cpu() && cfg.encoder == "sparse" {
        return Err(CliError::runtime(format!(
            "the sparse encoder does not run on {device} yet (its sparse convolutions have no CUDA kernels)"
        ))
        .hint("on a GPU use --encoder dense-masked (SparK's own simulation of sparsity), or --device cpu"));
    }
    let out = PathBuf::from(&cfg.out);
    check_run_folder(&out, resume_path.as_deref(), a.overwrite)?;

    // Data (listing errors surface here, before any training).
    let (dataset, skipped_links) = Dataset::open_counting(&cfg.data).map_err(|e| {
        CliError::runtime(e.to_string())
            .hint("--data takes a folder of images, class sub-folders, an IDX file or `builtin`")
    })?;
    let dataset = Arc::new(dataset);
    let transform = Transform::train(cfg.input_size, (cfg.crop_scale[0], cfg.crop_scale[1]));
    let loader = Loader::new(dataset.clone(), transform, LoaderConfig::train(cfg.batch_size, cfg.workers, cfg.seed))?;
    let spe = loader.steps_per_epoch();
    let total = match (cfg.steps, cfg.epochs) {
        (Some(s), _) => s,
        (None, Some(e)) => e * spe,
        (None, None) => 100 * spe,
    };
    let warmup = cfg
        .warmup_steps
        .unwrap_or(if cfg.preset == "quick" { total / 10 } else { (cfg.warmup_epochs * spe as f64).round() as usize })
        .min(total);

    // The trainer (spark::train): fresh, or continued from the checkpoint.
    let mut recipe = cfg.recipe();
    let peak = cfg.lr.unwrap_or(cfg.base_lr * cfg.batch_size as f64 / cfg.lr_ref_batch as f64);
    recipe.base_lr = peak;
    recipe.lr_ref_batch = cfg.batch_size;
    recipe.batch_size = cfg.batch_size;
    recipe.optimizer = if cfg.optimizer == "adamw" { OptimizerKind::AdamW } else { OptimizerKind::Lamb };
    recipe.beta1 = cfg.beta1;
    recipe.beta2 = cfg.beta2;
    recipe.max_grad_norm = cfg.max_grad_norm;
    recipe.wd_start = cfg.wd;
    recipe.wd_end = cfg.wd_end;
    // Recorded so that a checkpoint resumed without its config.toml keeps the run's crops.
    recipe.crop_scale = (cfg.crop_scale[0], cfg.crop_scale[1]);
    let train_cfg = TrainConfig {
        model: cfg.spark_config(),
        recipe,
        total_steps: total,
        warmup_steps: warmup,
        accum_steps: 1,
        mode: if cfg.encoder == "sparse" { EncoderMode::Sparse } else { EncoderMode::DenseMasked },
        seed: cfg.seed,
        checkpoint_dir: Some(out.clone()),
        checkpoint_every: cfg.save_every,
        precision: MatmulPrecision::parse(&cfg.precision).unwrap_or_default(),
    };
    let mut trainer = match &resume_path {
        Some(p) => {
            // The model is built from the checkpoint's own settings: check them first.
            if let Some(model) = checkpoint::header_model(p) {
                checkpoint::check_spark_meta(p, &model)?;
            }
            let mut t = Trainer::resume(p)?;
            if t.config.model != train_cfg.model {
                errln!("warning: the model settings come from the checkpoint; model flags are ignored on resume");
            }
            // Settings that do not change the model may differ on resume (e.g. a longer run).
            t.config = TrainConfig { model: t.config.model.clone(), ..train_cfg };
            t
        }
        None => Trainer::new(train_cfg)?,
    };
    trainer.model.to_device(device)?;
    let start = trainer.step;
    if start >= total {
        return Err(CliError::usage(format!("the checkpoint is already at step {start} of {total}; nothing to do"))
            .hint("pass a larger --steps (or --epochs) to train further"));
    }
    // Every input is valid: only now is anything written. The lock keeps a second run off this
    // folder until this process ends; the folder is checked again under it, since another run
    // may have finished in it since the check above.
    let _lock = lock_run_folder(&out)?;
    check_run_folder(&out, resume_path.as_deref(), a.overwrite)?;
    config::save(&cfg, &out.join("config.toml"))?;
    let spark_cfg = trainer.model.config.clone();
    errln!(
        "spark pretrain: {} (width x{}) at {} px, mask {:.2}, decoder {}, {:.2}M parameters",
        spark_cfg.backbone,
        spark_cfg.width_mult,
        spark_cfg.input_size,
        spark_cfg.mask_ratio,
        spark_cfg.decoder_width,
        trainer.model.num_parameters() as f64 / 1e6
    );
    errln!("data: {}; {} steps/epoch at batch {}", dataset.describe(), spe, cfg.batch_size);
    if let Some(note) = dataset.skipped_links_note(skipped_links) {
        errln!("warning: {note}");
    }
    errln!(
        "training: steps {start}..{total}, {} peak lr {peak:.2e}, warmup {warmup}, {} encoder, {} compute threads, {} data workers, seed {}",
        cfg.optimizer,
        cfg.encoder,
        compute_threads(),
        cfg.workers,
        cfg.seed
    );
    if trainer.config.precision == MatmulPrecision::Bf16 {
        errln!(
            "precision: bf16 autocast of the conv / matmul products ({})",
            if bf16_native() { "AVX512-BF16" } else { "no AVX512-BF16 on this CPU: rounded operands, no speed-up" }
        );
    }
    errln!("output: {}", out.display());

    let ckpt_path = out.join(checkpoint::FILE);
    let metrics_path = out.join("metrics.jsonl");
    let mut metrics = MetricsLog::open(&metrics_path, Some(start))?;
    let end = a.stop_at.map_or(total, |s| s.clamp(start + 1, total));
    let pb = progress::bar((end - start) as u64, "pretrain");
    let t0 = Instant::now();
    let mut stream = loader.stream(start, Some(end));
    let mut last_loss = f64::NAN;
    let mut first_loss = None;
    crate::interrupt::install();
    while trainer.step < end {
        if let Some(sig) = crate::interrupt::requested() {
            drop(stream);
            pb.abandon();
            trainer.save_checkpoint(&ckpt_path)?;
            write_plot(&metrics_path, &out.join("loss.svg"), &trainer.model.config)?;
            let by = crate::interrupt::name(sig);
            errln!("interrupted at step {} of {total} ({by}): wrote {}", trainer.step, ckpt_path.display());
            return Err(CliError::interrupted(
                sig,
                format!("stopped by {by}; continue with: spark pretrain --resume --out {}", out.display()),
            ));
        }
        let step = trainer.step;
        let batch = match stream.next() {
            Some(b) => b?,
            None => return Err(CliError::runtime("the data loader ended early")),
        };
        for (name, why) in &batch.newly_skipped {
            progress::println(&pb, &format!("warning: skipped unreadable image {name}: {why}"));
        }
        if batch.labels.len() < 2 {
            return Err(CliError::runtime(format!(
                "step {step}: only {} readable image(s) in the batch; batch norm needs 2",
                batch.labels.len()
            ))
            .hint("remove the unreadable files listed above"));
        }
        let m = trainer
            .train_step(&[batch.images.to_device(device)?])
            .map_err(|e| CliError::runtime(e.to_string()).hint("lower --lr or raise --warmup-steps"))?;
        first_loss.get_or_insert(m.loss);
        last_loss = m.loss;
        metrics.log(&Record {
            step,
            epoch: batch.epoch,
            loss: m.loss,
            lr: m.lr,
            wd: m.wd,
            images_per_s: m.images_per_sec,
            grad_norm: m.grad_norm,
            elapsed_s: t0.elapsed().as_secs_f64(),
        })?;
        pb.set_message(format!("loss {:.4} lr {:.2e}", m.loss, m.lr));
        pb.inc(1);
        if pb.is_hidden() && (m.step % 20 == 0 || m.step == end || step == start) {
            errln!(
                "step {:>5}/{total}  loss {:.4}  lr {:.2e}  grad-norm {:.3}  {:.1} img/s",
                m.step,
                m.loss,
                m.lr,
                m.grad_norm,
                m.images_per_sec
            );
        }
        if cfg.save_every > 0 && m.step % cfg.save_every == 0 && m.step < end {
            trainer.save_checkpoint(&ckpt_path)?;
        }
    }
    drop(stream);
    pb.finish_and_clear();
    trainer.save_checkpoint(&ckpt_path)?;
    let (skipped, distinct) = (loader.skips().count(), loader.skips().distinct().len());
    if end < total {
        errln!(
            "stopped at step {end} of {total} (--stop-at); continue with: spark pretrain --resume --out {}",
            out.display()
        );
    }
    errln!(
        "done: {} steps in {:.1}s; loss {:.4} -> {:.4}{}",
        end - start,
        t0.elapsed().as_secs_f64(),
        first_loss.unwrap_or(f64::NAN),
        last_loss,
        if skipped > 0 {
            format!("; {distinct} unreadable image(s) skipped ({skipped} times in all)")
        } else {
            String::new()
        }
    );
    write_plot(&metrics_path, &out.join("loss.svg"), &spark_cfg)?;
    errln!("wrote {}", ckpt_path.display());
    errln!("wrote {}", metrics.path().display());
    errln!("wrote {}", out.join("loss.svg").display());
    let png = out.join("reconstruction.png");
    let eval_data = if cfg.data == "builtin" { "builtin:val".to_string() } else { cfg.data.clone() };
    let eval_ds = Dataset::open(&eval_data).unwrap_or_else(|_| (*dataset).clone());
    trainer.model.eval();
    // The picture's forward uses the sparse encoder, which runs on the CPU.
    trainer.model.to_device(spark_engine::Device::Cpu)?;
    crate::cmd::reconstruct::write_grid(
        &trainer.model,
        &eval_ds,
        cfg.reconstruction_images,
        cfg.seed,
        cfg.workers,
        &png,
    )?;
    trainer.model.train();
    errln!("wrote {} (rows: original | masked input | reconstruction)", png.display());
    Ok(())
}

pub fn write_plot(metrics: &Path, svg: &Path, c: &SparkConfig) -> CliResult<()> {
    let title = format!("SparK pretraining loss: {} x{} @{} px", c.backbone, c.width_mult, c.input_size);
    write_plot_titled(metrics, svg, &title)
}

/// The loss curve of a metrics log as an SVG.
pub fn write_plot_titled(metrics: &Path, svg: &Path, title: &str) -> CliResult<()> {
    let recs = read_records(metrics)?;
    let pts: Vec<(f64, f64)> = recs.iter().map(|r| ((r.step + 1) as f64, r.loss)).collect();
    write_atomic(svg, loss_curve_svg(&pts, title).as_bytes())
}

/// The base settings of a resumed run: the `config.toml` beside the checkpoint, or when there is
/// none (a checkpoint copied elsewhere) the training config the checkpoint carries, which lacks
/// only the data (then `--data` is required).
fn resumed_config(ckpt: &Path, a: &PretrainArgs) -> CliResult<PretrainConfig> {
    let cfg_path = ckpt.with_file_name("config.toml");
    match std::fs::read_to_string(&cfg_path) {
        Ok(text) => toml::from_str(&text).map_err(|e| {
            CliError::runtime(format!("cannot resume: {}: {e}", cfg_path.display()))
                .hint("that file is the run's saved settings; restore it or remove it to use the checkpoint's own")
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let Some(t) = checkpoint::header_train_config(ckpt) else {
                return Err(CliError::runtime(format!(
                    "cannot resume: {} carries no training config and {} does not exist",
                    ckpt.display(),
                    cfg_path.display()
                ))
                .hint("resume from a last.safetensors written by `spark pretrain`"));
            };
            let Some(data) = a.data.clone() else {
                return Err(CliError::usage(format!(
                    "cannot resume {}: the checkpoint does not record its training data and there is no {} beside it",
                    ckpt.display(),
                    cfg_path.display()
                ))
                .hint("pass --data with the images the run trained on (a folder, an IDX file or `builtin`)"));
            };
            PretrainConfig::from_checkpoint(&t, data)
        }
        Err(e) => Err(CliError::runtime(format!("cannot resume: cannot read {}: {e}", cfg_path.display()))),
    }
}

/// The files that mark a folder as holding a pretraining run.
const RUN_FILES: [&str; 3] = [checkpoint::FILE, "config.toml", "metrics.jsonl"];

/// Refuses to start a run in a folder that already holds one, unless it is resumed from that
/// folder's own checkpoint or `--overwrite` was given.
fn check_run_folder(out: &Path, resume: Option<&Path>, overwrite: bool) -> CliResult<()> {
    let Some(found) = RUN_FILES.iter().find(|f| out.join(f).exists()) else {
        return Ok(());
    };
    if overwrite {
        return Ok(());
    }
    let own = out.join(checkpoint::FILE);
    match resume {
        Some(p) if same_file(p, &own) => Ok(()),
        Some(p) => Err(CliError::usage(format!(
            "{} already holds another run ({}); resuming {} into it would overwrite it",
            out.display(),
            out.join(found).display(),
            p.display()
        ))
        .hint("pass another --out, or --overwrite to replace that run")),
        None => Err(CliError::usage(format!(
            "{} already holds a run ({}); refusing to overwrite it",
            out.display(),
            out.join(found).display()
        ))
        .hint(format!(
            "continue it with --resume --out {0}, replace it with --overwrite, or pass another --out",
            out.display()
        ))),
    }
}

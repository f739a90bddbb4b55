//! `spark finetune`: image classification from a pretrained encoder (or from scratch) with
//! AdamW or LAMB, label smoothing, layer-wise lr decay, warm-up + cosine lr, and an evaluation
//! of the validation split after every epoch.

use super::classifier::{self, ModelFlags};
use super::eval::evaluate;
use crate::common::{
    check_f64, check_step_memory, check_threads, compute_threads, out_of_range, parse_precision, setup_compute_device,
    setup_threads, CommonOpts, StepSize,
};
use crate::error::{CliError, CliResult};
use crate::metrics::{MetricsLog, Record};
use crate::progress;
use clap::Args;
use spark::data::{Dataset, Loader, LoaderConfig, Transform};
use spark::optim::{optim_params, AdamW, AdamWConfig, Lamb, LambConfig, LrSchedule, NoDecayRules, Optimizer};
use spark_engine::{PrecisionScope, Rng};
use spark_nn::Ctx;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

#[derive(Args, Debug, Clone)]
pub struct FinetuneArgs {
    /// Pretrained weights: a `spark pretrain` checkpoint or a `spark export` file; omit to train
    /// from scratch.
    #[arg(long, value_name = "CHECKPOINT")]
    pub init: Option<PathBuf>,
    /// Labelled training images: class sub-folders, an IDX file with labels, or `builtin`.
    #[arg(long, default_value = "builtin")]
    pub data: String,
    /// Train on this class-balanced fraction of the labelled images (e.g. 0.01 for 1%), drawn
    /// by --seed: the semi-supervised splits of pretraining studies.
    #[arg(long, allow_negative_numbers = true, default_value_t = 1.0)]
    pub label_fraction: f64,
    /// Validation images (default: `builtin:val` for the built-in data, none otherwise).
    #[arg(long)]
    pub val_data: Option<String>,
    /// Backbone when training from scratch (default: the pretrained one).
    #[arg(long)]
    pub backbone: Option<String>,
    #[arg(long, allow_negative_numbers = true)]
    pub width_mult: Option<f64>,
    /// Input size (default: the pretrained model's).
    #[arg(long)]
    pub input_size: Option<usize>,
    /// adamw or lamb.
    #[arg(long, default_value = "adamw")]
    pub optimizer: String,
    /// Peak learning rate.
    #[arg(long, allow_negative_numbers = true, default_value_t = 1e-3)]
    pub lr: f64,
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.05)]
    pub weight_decay: f64,
    /// Layer-wise lr decay: stage k of n gets lr x decay^(n - k) (1.0 = off).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.7)]
    pub layer_decay: f64,
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.1)]
    pub label_smoothing: f64,
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Optimizer steps (default: 3 epochs).
    #[arg(long, conflicts_with = "epochs")]
    pub steps: Option<usize>,
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.1)]
    pub warmup_frac: f64,
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    pub drop_path: f64,
    /// Output folder for the classifier, its metrics and loss curve.
    #[arg(long, default_value = "runs/finetune")]
    pub out: PathBuf,
    /// Replace the fine-tuning run already in --out. Without it, a folder that holds one
    /// (classifier.safetensors or metrics.jsonl) is refused.
    #[arg(long)]
    pub overwrite: bool,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Stage index of a parameter for layer-wise decay: stem 0, stages 1..=4, head 5.
fn layer_id(name: &str) -> usize {
    for (i, p) in ["layer1.", "layer2.", "layer3.", "layer4."].iter().enumerate() {
        if name.starts_with(p) {
            return i + 1;
        }
    }
    if let Some(rest) = name.strip_prefix("stages.").or_else(|| name.strip_prefix("downsample_layers.")) {
        let s: usize = rest.split('.').next().and_then(|d| d.parse().ok()).unwrap_or(0);
        return if name.starts_with("stages.") { s + 1 } else { s.min(3) + usize::from(s > 0) };
    }
    if name.starts_with("fc.") || name.starts_with("head.") || name.starts_with("norm.") {
        return 5;
    }
    0
}

fn model_flags(a: &FinetuneArgs) -> ModelFlags<'_> {
    ModelFlags { backbone: a.backbone.as_deref(), width_mult: a.width_mult, input_size: a.input_size }
}

/// Checks every numeric flag against its range before anything is read, built or written.
fn validate(a: &FinetuneArgs, workers: usize) -> CliResult<()> {
    let inf = f64::INFINITY;
    check_f64("--lr", a.lr, 0.0, true, inf, false)?;
    check_f64("--weight-decay", a.weight_decay, 0.0, false, inf, false)?;
    check_f64("--layer-decay", a.layer_decay, 0.0, true, 1.0, false)?;
    check_f64("--label-smoothing", a.label_smoothing, 0.0, false, 1.0, true)?;
    check_f64("--warmup-frac", a.warmup_frac, 0.0, false, 1.0, false)?;
    check_f64("--drop-path", a.drop_path, 0.0, false, 1.0, true)?;
    check_f64("--label-fraction", a.label_fraction, 0.0, true, 1.0, false)?;
    model_flags(a).validate()?;
    if a.batch_size < 2 {
        return Err(
            out_of_range("--batch-size", a.batch_size, ">= 2").hint("batch norm needs at least 2 images per batch")
        );
    }
    if a.steps == Some(0) {
        return Err(out_of_range("--steps", 0, ">= 1"));
    }
    if a.epochs == Some(0) {
        return Err(out_of_range("--epochs", 0, ">= 1"));
    }
    check_threads("--workers", workers, 0)?;
    if !["adamw", "lamb"].contains(&a.optimizer.as_str()) {
        return Err(CliError::usage(format!("--optimizer '{}': use adamw or lamb", a.optimizer)));
    }
    Ok(())
}

pub fn run(a: FinetuneArgs, common: CommonOpts) -> CliResult<()> {
    let workers = common.workers.unwrap_or(2);
    validate(&a, workers)?;
    check_run_folder(&a.out, a.overwrite)?;
    setup_threads(common.threads)?;
    let device = setup_compute_device(common.device.as_deref().unwrap_or("cpu"))?;
    // Held by a scope around each step's forward and backward.
    let precision = parse_precision(common.precision.as_deref())?.unwrap_or_default();
    let train = Arc::new(Dataset::open(&a.data).map_err(|e| CliError::runtime(e.to_string()))?);
    if !train.is_labelled() {
        return Err(CliError::usage(format!("{} has no labels", train.describe()))
            .hint("fine-tuning needs class sub-folders (root/class_x/*.jpg) or an IDX file with labels"));
    }
    let train = Arc::new(train.labelled_subset(a.label_fraction, a.seed)?);
    let val_spec = a.val_data.clone().or_else(|| a.data.starts_with("builtin").then(|| "builtin:val".to_string()));
    let val = val_spec.map(|v| Dataset::open(&v).map_err(|e| CliError::runtime(e.to_string()))).transpose()?;

    // The encoder: pretrained weights or a fresh one.
    let (init_spec, init_tensors) = classifier::open_init(a.init.as_deref())?;
    let spec = model_flags(&a).resolve(init_spec.as_ref(), train.classes.clone());
    if spec.input_size == 0 || !spec.input_size.is_multiple_of(32) {
        return Err(out_of_range("--input-size", spec.input_size, "a positive multiple of 32"));
    }
    check_step_memory(&StepSize {
        backbone: &spec.backbone,
        width_mult: spec.width_mult,
        input_size: spec.input_size,
        batch_size: a.batch_size,
        decoder_width: 0,
        encoder_fraction: 1.0,
    })?;
    let mut rng = Rng::new(a.seed);
    let mut model = classifier::build(&spec, a.drop_path, &mut rng)?;
    if let Some(p) = &a.init {
        // The head (and anything else the file lacks) keeps its fresh initialisation.
        let (copied, left) = classifier::copy_matching(model.as_ref(), &init_tensors, p)?;
        let non_head: Vec<_> = left.iter().filter(|n| layer_id(n) != 5).collect();
        if copied == 0 || !non_head.is_empty() {
            return Err(classifier::does_not_fit(p, &spec, copied, &non_head));
        }
        errln!("initialised {copied} tensors from {} (fresh: {})", p.display(), left.join(", "));
    }
    model.to_device(device)?;
    model.train();

    let loader = Loader::new(
        train.clone(),
        Transform::train(spec.input_size, (0.35, 1.0)),
        LoaderConfig::train(a.batch_size, workers, a.seed),
    )?;
    let spe = loader.steps_per_epoch();
    let total = a.steps.unwrap_or(a.epochs.unwrap_or(3) * spe).max(1);
    let lr_s = LrSchedule {
        peak: a.lr,
        warmup_iters: (a.warmup_frac * total as f64).round() as usize,
        total_iters: total,
        warmup_start_factor: 0.005,
        min_factor: 0.001,
        cosine_end: spark::optim::CosineEnd::LastIter,
    };
    // One optimizer per lr group, so each keeps its own step count for bias correction.
    let rules = NoDecayRules::default();
    let named = model.trainable_parameters();
    let mut groups: Vec<(f64, Vec<spark::optim::OptimParam>, Box<dyn Optimizer>)> = Vec::new();
    for id in 0..=5usize {
        let scale = a.layer_decay.powi(5 - id as i32);
        let sel: Vec<_> = named.iter().filter(|(n, _)| layer_id(n) == id).cloned().collect();
        if sel.is_empty() {
            continue;
        }
        let opt: Box<dyn Optimizer> = if a.optimizer == "lamb" {
            Box::new(Lamb::new(LambConfig { max_grad_norm: None, bias_correction: false, ..LambConfig::default() }))
        } else {
            Box::new(AdamW::new(AdamWConfig::default()))
        };
        groups.push((scale, optim_params(&sel, &rules), opt));
    }

    errln!(
        "spark finetune: {} x{} at {} px, {} classes, {:.2}M parameters, {}",
        spec.backbone,
        spec.width_mult,
        spec.input_size,
        spec.classes.len(),
        model.num_parameters() as f64 / 1e6,
        if a.init.is_some() { "from pretrained weights" } else { "from scratch" }
    );
    errln!("data: {}; {} steps/epoch at batch {}", train.describe(), spe, a.batch_size);
    errln!(
        "training: {total} steps on {device}, {} lr {:.1e}, layer decay {}, label smoothing {}, {} threads, {} products",
        a.optimizer,
        a.lr,
        a.layer_decay,
        a.label_smoothing,
        compute_threads(),
        precision.name()
    );
    // Held until run() returns; the OS drops it on exit or crash. Checked again under the lock:
    // another run may have finished in this folder since the check at the start.
    let _lock = crate::run_lock::lock_run_folder(&a.out)?;
    check_run_folder(&a.out, a.overwrite)?;
    let mut metrics = MetricsLog::open(&a.out.join("metrics.jsonl"), None)?;
    let pb = progress::bar(total as u64, "finetune");
    let t0 = Instant::now();
    let mut ctx = Ctx::new(a.seed ^ 0xF1);
    let mut epoch_seen = 0;
    let mut done = 0;
    let mut stream = loader.stream(0, Some(total));
    crate::interrupt::install();
    loop {
        if let Some(sig) = crate::interrupt::requested() {
            drop(stream);
            pb.abandon();
            model.eval();
            let path = a.out.join("classifier.safetensors");
            classifier::save(&path, model.as_ref(), &spec, done)?;
            crate::cmd::pretrain::write_plot_titled(
                &a.out.join("metrics.jsonl"),
                &a.out.join("loss.svg"),
                "fine-tuning loss",
            )?;
            let by = crate::interrupt::name(sig);
            errln!("interrupted at step {done} of {total} ({by}): wrote {}", path.display());
            errln!("wrote {}", a.out.join("metrics.jsonl").display());
            errln!("wrote {}", a.out.join("loss.svg").display());
            return Err(CliError::interrupted(
                sig,
                format!("stopped by {by}; the classifier after {done} steps is in {}", path.display()),
            ));
        }
        let Some(batch) = stream.next() else {
            break;
        };
        let batch = batch?;
        for (n, why) in &batch.newly_skipped {
            progress::println(&pb, &format!("warning: skipped unreadable image {n}: {why}"));
        }
        done = batch.step + 1;
        if batch.labels.len() < 2 {
            pb.inc(1);
            continue;
        }
        let ts = Instant::now();
        let step = batch.step;
        let lr = lr_s.lr(step);
        let autocast = PrecisionScope::new(precision);
        let logits = model.forward(&batch.images.to_device(device)?, &mut ctx)?;
        let loss_t = logits.cross_entropy(&batch.labels, a.label_smoothing)?;
        let loss = loss_t.to_scalar()?;
        if !loss.is_finite() {
            return Err(CliError::runtime(format!("loss became {loss} at step {step}")).hint("lower --lr"));
        }
        let grads = loss_t.backward()?;
        drop(autocast);
        let mut sq = 0.0;
        for (scale, params, opt) in groups.iter_mut() {
            let info = opt.step(params, &grads, lr * *scale, a.weight_decay)?;
            sq += info.grad_norm * info.grad_norm;
        }
        let b = batch.labels.len();
        metrics.log(&Record {
            step,
            epoch: batch.epoch,
            loss,
            lr,
            wd: a.weight_decay,
            images_per_s: b as f64 / ts.elapsed().as_secs_f64().max(1e-9),
            grad_norm: sq.sqrt(),
            elapsed_s: t0.elapsed().as_secs_f64(),
        })?;
        pb.set_message(format!("loss {loss:.4}"));
        pb.inc(1);
        let epoch_end = (step + 1) % spe == 0 || step + 1 == total;
        if pb.is_hidden() && ((step + 1) % 20 == 0 || step == 0) {
            errln!("step {:>5}/{total}  loss {loss:.4}  lr {lr:.2e}", step + 1);
        }
        if epoch_end {
            epoch_seen += 1;
            if let Some(v) = &val {
                model.eval();
                let r = evaluate(model.as_ref(), v, spec.input_size, a.batch_size, workers, None)?;
                model.train();
                progress::println(
                    &pb,
                    &format!(
                        "epoch {epoch_seen}: train loss {loss:.4}, val top-1 {:.2}% top-5 {:.2}% ({} images)",
                        r.top1 * 100.0,
                        r.top5 * 100.0,
                        r.n
                    ),
                );
            }
        }
    }
    pb.finish_and_clear();
    model.eval();
    let path = a.out.join("classifier.safetensors");
    classifier::save(&path, model.as_ref(), &spec, total)?;
    crate::cmd::pretrain::write_plot_titled(&a.out.join("metrics.jsonl"), &a.out.join("loss.svg"), "fine-tuning loss")?;
    errln!("done: {total} steps in {:.1}s", t0.elapsed().as_secs_f64());
    errln!("wrote {}", path.display());
    errln!("wrote {}", a.out.join("metrics.jsonl").display());
    errln!("wrote {}", a.out.join("loss.svg").display());
    Ok(())
}

/// The files that mark a folder as holding a fine-tuning run.
const RUN_FILES: [&str; 2] = ["classifier.safetensors", "metrics.jsonl"];

/// Refuses to start a run in a folder that already holds one, unless `--overwrite` was given.
fn check_run_folder(out: &Path, overwrite: bool) -> CliResult<()> {
    match RUN_FILES.iter().find(|f| out.join(f).exists()) {
        Some(found) if !overwrite => Err(CliError::usage(format!(
            "{} already holds a fine-tuning run ({}); refusing to overwrite it",
            out.display(),
            out.join(found).display()
        ))
        .hint("replace it with --overwrite, or pass another --out")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::layer_id;

    #[test]
    fn layer_ids_follow_the_stages() {
        assert_eq!(layer_id("conv1.weight"), 0);
        assert_eq!(layer_id("bn1.bias"), 0);
        assert_eq!(layer_id("layer1.0.conv1.weight"), 1);
        assert_eq!(layer_id("layer4.1.bn2.weight"), 4);
        assert_eq!(layer_id("fc.weight"), 5);
        assert_eq!(layer_id("downsample_layers.0.0.weight"), 0);
        assert_eq!(layer_id("downsample_layers.2.1.weight"), 3);
        assert_eq!(layer_id("stages.0.1.dwconv.weight"), 1);
        assert_eq!(layer_id("stages.3.0.gamma"), 4);
        assert_eq!(layer_id("head.bias"), 5);
    }
}

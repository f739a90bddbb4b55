//! `spark probe`: linear probing of a frozen encoder. The pooled features of the training and
//! test images are computed once (eval transform, no augmentation), then a softmax classifier is
//! trained on them (`spark::probe`) and scored on the test features. The encoder is a pretrained
//! one (`--init`) or a randomly initialised one (`--backbone`), the usual baseline.

use super::classifier::{self, ModelFlags, ModelSpec};
use crate::common::{check_f64, out_of_range, setup_compute_device, setup_precision, setup_threads, CommonOpts};
use crate::error::{CliError, CliResult};
use crate::progress;
use clap::Args;
use spark::data::{Dataset, Loader, LoaderConfig, Transform};
use spark::probe::{train_linear_probe, ProbeConfig};
use spark_engine::{no_grad, Device, Rng, Tensor};
use spark_nn::{Backbone, Ctx};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

#[derive(Args, Debug, Clone)]
pub struct ProbeArgs {
    /// The encoder to probe: a `spark pretrain` checkpoint, a `spark export` file or a classifier
    /// (its head is ignored); omit to probe a randomly initialised `--backbone`.
    #[arg(long, value_name = "CHECKPOINT")]
    pub init: Option<PathBuf>,
    /// Labelled training images (class sub-folders, an IDX file with labels, or `builtin`).
    #[arg(long, default_value = "builtin")]
    pub data: String,
    /// Labelled test images the probe is scored on.
    #[arg(long, default_value = "builtin:val")]
    pub val_data: String,
    /// Train the probe on this class-balanced fraction of the training labels.
    #[arg(long, allow_negative_numbers = true, default_value_t = 1.0)]
    pub label_fraction: f64,
    /// Backbone of a random encoder (default: resnet18, or the checkpoint's).
    #[arg(long)]
    pub backbone: Option<String>,
    #[arg(long, allow_negative_numbers = true)]
    pub width_mult: Option<f64>,
    /// Input size (default: the checkpoint's, else 96).
    #[arg(long)]
    pub input_size: Option<usize>,
    /// Passes of the probe's training over the features.
    #[arg(long, default_value_t = 30)]
    pub epochs: usize,
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Peak learning rate of the probe (AdamW, cosine).
    #[arg(long, allow_negative_numbers = true, default_value_t = 1e-3)]
    pub lr: f64,
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Seeds the random encoder, the label subset and the probe's minibatch order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

fn model_flags(a: &ProbeArgs) -> ModelFlags<'_> {
    ModelFlags { backbone: a.backbone.as_deref(), width_mult: a.width_mult, input_size: a.input_size }
}

fn validate(a: &ProbeArgs) -> CliResult<()> {
    check_f64("--label-fraction", a.label_fraction, 0.0, true, 1.0, false)?;
    check_f64("--lr", a.lr, 0.0, true, f64::INFINITY, false)?;
    check_f64("--weight-decay", a.weight_decay, 0.0, false, f64::INFINITY, false)?;
    model_flags(a).validate()?;
    if a.epochs == 0 {
        return Err(out_of_range("--epochs", 0, ">= 1"));
    }
    if a.batch_size == 0 {
        return Err(out_of_range("--batch-size", 0, ">= 1"));
    }
    Ok(())
}

/// The headless encoder in eval mode: the checkpoint's weights, or a seeded random one.
fn encoder(a: &ProbeArgs) -> CliResult<(Box<dyn Backbone>, ModelSpec, String)> {
    let (init_spec, tensors) = classifier::open_init(a.init.as_deref())?;
    let spec = model_flags(a).resolve(init_spec.as_ref(), Vec::new());
    let mut model = classifier::build(&spec, 0.0, &mut Rng::new(a.seed))?;
    let what = match &a.init {
        Some(p) => {
            let (copied, left) = classifier::copy_matching(model.as_ref(), &tensors, p)?;
            if copied == 0 || !left.is_empty() {
                return Err(classifier::does_not_fit(p, &spec, copied, &left.iter().collect::<Vec<_>>()));
            }
            format!("pretrained encoder {}", p.display())
        }
        None => format!("randomly initialised encoder (seed {})", a.seed),
    };
    model.eval();
    Ok((model, spec, what))
}

/// Pooled features `[N, C]` (host) and labels of every readable image of `ds`.
fn pooled_features(
    model: &dyn Backbone,
    ds: &Dataset,
    size: usize,
    device: Device,
    workers: usize,
) -> CliResult<(Tensor, Vec<usize>)> {
    let loader = Loader::new(Arc::new(ds.clone()), Transform::eval(size), LoaderConfig::eval(128, workers))?;
    let pb = progress::bar(loader.steps_per_epoch() as u64, "features");
    let (mut parts, mut labels) = (Vec::new(), Vec::new());
    let mut ctx = Ctx::new(0);
    for b in loader.epoch(0) {
        let b = b?;
        for (n, why) in &b.newly_skipped {
            progress::println(&pb, &format!("warning: skipped unreadable image {n}: {why}"));
        }
        let f = no_grad(|| model.forward(&b.images.to_device(device)?, &mut ctx))?;
        parts.push(f.to_device(Device::Cpu)?);
        labels.extend_from_slice(&b.labels);
        pb.inc(1);
    }
    pb.finish_and_clear();
    if parts.is_empty() {
        return Err(CliError::runtime(format!("{}: no readable image", ds.describe())));
    }
    Ok((Tensor::cat(&parts, 0)?, labels))
}

fn open_labelled(spec: &str, what: &str) -> CliResult<Dataset> {
    let ds = Dataset::open(spec).map_err(|e| CliError::runtime(e.to_string()))?;
    if !ds.is_labelled() {
        return Err(CliError::usage(format!("{what} {} has no labels", ds.describe()))
            .hint("a linear probe needs class sub-folders or an IDX file with labels"));
    }
    Ok(ds)
}

pub fn run(a: ProbeArgs, common: CommonOpts) -> CliResult<()> {
    validate(&a)?;
    setup_threads(common.threads)?;
    let device = setup_compute_device(common.device.as_deref().unwrap_or("cpu"))?;
    setup_precision(&common)?;
    let workers = common.workers.unwrap_or(2);
    let train = open_labelled(&a.data, "--data")?;
    let test = open_labelled(&a.val_data, "--val-data")?;
    if train.classes != test.classes {
        return Err(CliError::usage(format!(
            "--data has classes {:?}, --val-data {:?}",
            train.classes.iter().take(5).collect::<Vec<_>>(),
            test.classes.iter().take(5).collect::<Vec<_>>()
        )));
    }
    let train = train.labelled_subset(a.label_fraction, a.seed)?;
    let (mut model, spec, what) = encoder(&a)?;
    model.to_device(device)?;
    errln!(
        "spark probe: {} x{} at {} px, {what}, {} features",
        spec.backbone,
        spec.width_mult,
        spec.input_size,
        model.num_features()
    );
    errln!("train: {}; test: {}", train.describe(), test.describe());
    let t0 = Instant::now();
    let (train_x, train_y) = pooled_features(model.as_ref(), &train, spec.input_size, device, workers)?;
    let (test_x, test_y) = pooled_features(model.as_ref(), &test, spec.input_size, device, workers)?;
    errln!("features of {} + {} images in {:.1}s", train_y.len(), test_y.len(), t0.elapsed().as_secs_f64());
    let cfg = ProbeConfig {
        epochs: a.epochs,
        batch_size: a.batch_size,
        lr: a.lr,
        weight_decay: a.weight_decay,
        seed: a.seed,
    };
    let t1 = Instant::now();
    let probe = train_linear_probe(&train_x, &train_y, train.num_classes(), &cfg)?;
    let train_acc = probe.accuracy(&train_x, &train_y)?;
    let top1 = probe.accuracy(&test_x, &test_y)?;
    errln!(
        "probe: {} epochs in {:.1}s, final loss {:.4}, train top-1 {:.2}%",
        a.epochs,
        t1.elapsed().as_secs_f64(),
        probe.final_loss,
        train_acc * 100.0
    );
    outln!("top-1: {:.2}%   ({} test images, linear probe)", top1 * 100.0, test_y.len());
    Ok(())
}

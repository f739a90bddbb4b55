//! `spark eval`: top-1 / top-5 accuracy and the confusion matrix of a fine-tuned classifier.

use super::classifier;
use crate::common::{setup_compute_device, setup_precision, setup_threads, CommonOpts};
use crate::error::{CliError, CliResult};
use crate::output::{ensure_not_input, write_atomic};
use crate::progress;
use clap::Args;
use spark::data::{Dataset, Loader, LoaderConfig, Transform};
use spark_engine::{no_grad, Device};
use spark_nn::{Backbone, Ctx};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Args, Debug, Clone)]
pub struct EvalArgs {
    /// A classifier written by `spark finetune`.
    #[arg(long, short = 'c', default_value = "runs/finetune/classifier.safetensors")]
    pub checkpoint: PathBuf,
    /// Labelled images (class sub-folders with the training class names, IDX with labels, or
    /// `builtin:val`).
    #[arg(long, default_value = "builtin:val")]
    pub data: String,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Also write the confusion matrix as CSV (rows = true class, columns = predicted).
    #[arg(long, value_name = "FILE")]
    pub confusion_csv: Option<PathBuf>,
}

pub struct EvalResult {
    pub n: usize,
    pub top1: f64,
    pub top5: f64,
    /// confusion[true][pred]
    pub confusion: Vec<Vec<usize>>,
}

/// Runs the classifier over `ds` with the eval transform.
pub fn evaluate(
    model: &dyn Backbone,
    ds: &Dataset,
    size: usize,
    batch: usize,
    workers: usize,
    pb: Option<&indicatif::ProgressBar>,
) -> CliResult<EvalResult> {
    let k = model.num_classes();
    let loader = Loader::new(Arc::new(ds.clone()), Transform::eval(size), LoaderConfig::eval(batch.max(1), workers))?;
    let mut confusion = vec![vec![0usize; k]; k];
    let (mut n, mut c1, mut c5) = (0usize, 0usize, 0usize);
    let mut ctx = Ctx::new(0);
    // The model's device (the loader's batches are host tensors).
    let device = model.named_parameters().first().map_or(Device::Cpu, |(_, p)| p.device());
    for b in loader.epoch(0) {
        let b = b?;
        let logits = no_grad(|| model.forward(&b.images.to_device(device)?, &mut ctx))?;
        let v = logits.to_vec_f32()?;
        for (row, &label) in b.labels.iter().enumerate() {
            let scores = &v[row * k..(row + 1) * k];
            let mut order: Vec<usize> = (0..k).collect();
            order.sort_by(|&i, &j| scores[j].total_cmp(&scores[i]));
            if label < k {
                confusion[label][order[0]] += 1;
            }
            c1 += usize::from(order[0] == label);
            c5 += usize::from(order.iter().take(5).any(|&i| i == label));
            n += 1;
        }
        if let Some(pb) = pb {
            pb.inc(1);
        }
    }
    if n == 0 {
        return Err(CliError::runtime("no readable image to evaluate"));
    }
    Ok(EvalResult { n, top1: c1 as f64 / n as f64, top5: c5 as f64 / n as f64, confusion })
}

pub fn run(a: EvalArgs, common: CommonOpts) -> CliResult<()> {
    setup_threads(common.threads)?;
    let device = setup_compute_device(common.device.as_deref().unwrap_or("cpu"))?;
    setup_precision(&common)?;
    if let Some(csv) = &a.confusion_csv {
        ensure_not_input(csv, "--confusion-csv", &[("--checkpoint", &a.checkpoint), ("--data", Path::new(&a.data))])?;
    }
    let (mut model, spec) = classifier::load_classifier(&a.checkpoint)?;
    model.to_device(device)?;
    let ds = Dataset::open(&a.data).map_err(|e| CliError::runtime(e.to_string()))?;
    if !ds.is_labelled() {
        return Err(CliError::usage(format!("{} has no labels to evaluate against", ds.describe())));
    }
    if ds.classes != spec.classes {
        return Err(CliError::usage(format!(
            "the data's classes {:?} differ from the model's {:?}",
            ds.classes.iter().take(5).collect::<Vec<_>>(),
            spec.classes.iter().take(5).collect::<Vec<_>>()
        ))
        .hint("evaluate on data with the same class folders as the fine-tuning data"));
    }
    let pb = progress::bar(ds.len().div_ceil(a.batch_size.max(1)) as u64, "eval");
    let r = evaluate(model.as_ref(), &ds, spec.input_size, a.batch_size, common.workers.unwrap_or(2), Some(&pb))?;
    pb.finish_and_clear();
    outln!("model: {} x{} at {} px ({})", spec.backbone, spec.width_mult, spec.input_size, a.checkpoint.display());
    outln!("data: {}", ds.describe());
    outln!("top-1: {:.2}%   top-5: {:.2}%   ({} images)", r.top1 * 100.0, r.top5 * 100.0, r.n);
    outln!();
    outln!("confusion matrix (rows: true class, columns: predicted):");
    let labels: Vec<String> = spec
        .classes
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{i:>2} {}", c.chars().take(18).collect::<String>()))
        .collect();
    let w = labels.iter().map(|l| l.len()).max().unwrap_or(4);
    out!("{:<w$} ", "");
    for j in 0..spec.classes.len() {
        out!("{j:>4}");
    }
    outln!("  recall");
    for (i, row) in r.confusion.iter().enumerate() {
        out!("{:<w$} ", labels[i]);
        for v in row {
            out!("{v:>4}");
        }
        let tot: usize = row.iter().sum();
        outln!("  {:>5.1}%", if tot > 0 { 100.0 * row[i] as f64 / tot as f64 } else { 0.0 });
    }
    if let Some(p) = &a.confusion_csv {
        let mut s = format!("true\\pred,{}\n", spec.classes.join(","));
        for (i, row) in r.confusion.iter().enumerate() {
            s += &format!("{},{}\n", spec.classes[i], row.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(","));
        }
        write_atomic(p, s.as_bytes())?;
        outln!("wrote {}", p.display());
    }
    Ok(())
}

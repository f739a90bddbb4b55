//! `spark extract`: encoder features to safetensors, like mmpretrain's `extract_feat`: the four
//! maps of strides 4/8/16/32 (`features.0` .. `features.3`, [N, C, H, W]) or, with `--pooled`,
//! the global average of the deepest one (`pooled`, [N, C]).

use super::classifier;
use crate::common::{setup_device, setup_precision, setup_threads, CommonOpts};
use crate::error::{CliError, CliResult};
use crate::output::ensure_not_input;
use crate::progress;
use clap::Args;
use spark::data::{Dataset, Loader, LoaderConfig, Sample, SampleSource, Transform};
use spark_engine::{no_grad, Tensor};
use spark_nn::{Ctx, FeatureMap};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Args, Debug, Clone)]
pub struct ExtractArgs {
    /// Image files; without them, --data is used.
    pub images: Vec<PathBuf>,
    /// Any spark model file (pretraining checkpoint, export, fine-tuned classifier).
    #[arg(long, short = 'c', default_value = "runs/pretrain/last.safetensors")]
    pub checkpoint: PathBuf,
    #[arg(long, default_value = "builtin:val")]
    pub data: String,
    /// Only the pooled deepest features [N, C].
    #[arg(long)]
    pub pooled: bool,
    #[arg(long, short = 'o', default_value = "features.safetensors")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
}

pub fn run(a: ExtractArgs, common: CommonOpts) -> CliResult<()> {
    setup_threads(common.threads)?;
    setup_device(common.device.as_deref().unwrap_or("cpu"))?;
    setup_precision(&common)?;
    let mut inputs: Vec<(&str, &Path)> = vec![("--checkpoint", &a.checkpoint), ("--data", Path::new(&a.data))];
    inputs.extend(a.images.iter().map(|p| ("image", p.as_path())));
    ensure_not_input(&a.out, "-o", &inputs)?;
    let (model, spec) = classifier::load_any(&a.checkpoint)?;
    let ds = if a.images.is_empty() {
        Dataset::open(&a.data).map_err(|e| CliError::runtime(e.to_string()))?
    } else {
        Dataset {
            kind: spark::data::DatasetKind::Flat,
            origin: "command line".into(),
            samples: a.images.iter().map(|p| Sample { source: SampleSource::File(p.clone()), label: 0 }).collect(),
            classes: Vec::new(),
        }
    };
    let loader = Loader::new(
        Arc::new(ds.clone()),
        Transform::eval(spec.input_size),
        LoaderConfig::eval(a.batch_size.max(1), common.workers.unwrap_or(2)),
    )?;
    let pb = progress::bar(loader.steps_per_epoch() as u64, "extract");
    let mut levels: Vec<Vec<Tensor>> = Vec::new();
    let mut names = Vec::new();
    let mut labels = Vec::new();
    let mut ctx = Ctx::new(0);
    for b in loader.epoch(0) {
        let b = b?;
        for (n, why) in &b.newly_skipped {
            progress::println(&pb, &format!("warning: skipped unreadable image {n}: {why}"));
        }
        let feats = no_grad(|| model.forward_features(FeatureMap::Dense(b.images.clone()), &mut ctx))?;
        let feats: Vec<Tensor> = feats.iter().map(|f| f.to_dense()).collect::<spark_engine::Result<_>>()?;
        let feats = if a.pooled {
            let deep = feats.last().ok_or_else(|| CliError::runtime("the backbone returned no features"))?;
            vec![no_grad(|| deep.mean(&[2, 3], false))?]
        } else {
            feats
        };
        if levels.is_empty() {
            levels = vec![Vec::new(); feats.len()];
        }
        for (l, f) in feats.into_iter().enumerate() {
            levels[l].push(f);
        }
        names.extend(b.indices.iter().map(|&i| ds.samples[i].name()));
        labels.extend(b.labels.iter().map(|&l| l as f32));
        pb.inc(1);
    }
    pb.finish_and_clear();
    if names.is_empty() {
        return Err(CliError::runtime("no readable image to extract features from"));
    }
    let mut tensors = Vec::new();
    for (l, parts) in levels.into_iter().enumerate() {
        let t = Tensor::cat(&parts, 0)?;
        let name = if a.pooled { "pooled".to_string() } else { format!("features.{l}") };
        outln!("{name}: {:?}", t.dims());
        tensors.push((name, t));
    }
    if ds.is_labelled() {
        tensors.push(("labels".into(), Tensor::from_vec(labels.clone(), &[labels.len()])?));
    }
    let mut meta = HashMap::new();
    meta.insert("images".into(), serde_json::to_string(&names).unwrap_or_default());
    meta.insert("model".into(), serde_json::to_string(&spec).unwrap_or_default());
    spark::st_io::save(&a.out, &tensors, meta)?;
    outln!("wrote {} ({} images)", a.out.display(), names.len());
    Ok(())
}

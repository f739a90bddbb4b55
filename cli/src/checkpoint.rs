//! Pretraining checkpoints: one safetensors file with the model's parameters and buffers (SparK
//! state-dict names), the optimizer moments (`optim.m.*`, `optim.v.*`) and, in the metadata, the
//! model config, the run config, the step and the RNG state. Written atomically by
//! `spark::st_io::save` (temp file + rename).

use crate::error::{CliError, CliResult};
use spark::optim::Optimizer;
use spark::{SparK, SparkConfig};
use spark_engine::{Rng, Tensor};
use spark_nn::Module;
use std::collections::HashMap;
use std::path::Path;

pub const FORMAT: &str = "spark-pretrain-v1";

pub struct Loaded {
    pub spark: SparkConfig,
    /// The run config as TOML text (see `cmd::pretrain::PretrainConfig`).
    pub run_toml: String,
    pub step: usize,
    pub rng: Rng,
    pub model: Vec<(String, Tensor)>,
    pub optim: Vec<(String, Tensor)>,
    pub optim_step: u64,
}

pub fn save(
    path: &Path,
    model: &SparK,
    optim: &dyn Optimizer,
    run_toml: &str,
    step: usize,
    rng: &Rng,
) -> CliResult<()> {
    let mut tensors: Vec<(String, Tensor)> = model.state_dict().into_iter().map(|(n, t, _)| (n, t)).collect();
    tensors.extend(optim.moments().named_tensors().into_iter().map(|(n, t)| (format!("optim.{n}"), t)));
    let mut meta = HashMap::new();
    meta.insert("format".into(), FORMAT.into());
    meta.insert("spark_config".into(), serde_json::to_string(&model.config).unwrap_or_default());
    meta.insert("run_config".into(), run_toml.to_string());
    meta.insert("step".into(), step.to_string());
    meta.insert("optim_step".into(), optim.moments().step.to_string());
    meta.insert("rng".into(), serde_json::to_string(&rng.state()).unwrap_or_default());
    spark::st_io::save(path, &tensors, meta)?;
    Ok(())
}

pub fn load(path: &Path) -> CliResult<Loaded> {
    if !path.exists() {
        return Err(CliError::usage(format!("checkpoint {} does not exist", path.display()))
            .hint("pass the checkpoint.safetensors written by `spark pretrain` (in its --out folder)"));
    }
    let (tensors, meta) = spark::st_io::load(path)?;
    let bad = |what: &str| {
        CliError::runtime(format!("{} is not a spark pretraining checkpoint ({what})", path.display()))
            .hint("pretraining checkpoints come from `spark pretrain`; fine-tuned ones from `spark finetune`")
    };
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(bad("no `format = spark-pretrain-v1` metadata"));
    }
    let spark: SparkConfig = serde_json::from_str(meta.get("spark_config").ok_or_else(|| bad("no model config"))?)
        .map_err(|_| bad("model config"))?;
    let step = meta.get("step").and_then(|s| s.parse().ok()).ok_or_else(|| bad("no step"))?;
    let optim_step = meta.get("optim_step").and_then(|s| s.parse().ok()).unwrap_or(0);
    let rng_state: [u64; 4] =
        serde_json::from_str(meta.get("rng").ok_or_else(|| bad("no rng state"))?).map_err(|_| bad("rng state"))?;
    let (optim, model): (Vec<_>, Vec<_>) = tensors.into_iter().partition(|(n, _)| n.starts_with("optim."));
    let optim = optim.into_iter().map(|(n, t)| (n["optim.".len()..].to_string(), t)).collect();
    Ok(Loaded {
        spark,
        run_toml: meta.get("run_config").cloned().unwrap_or_default(),
        step,
        rng: Rng::from_state(rng_state),
        model,
        optim,
        optim_step,
    })
}

/// Copies named tensors into a module's parameters and buffers; every module tensor must be
/// present with the same shape.
pub fn load_into(module: &dyn Module, tensors: &[(String, Tensor)], what: &Path) -> CliResult<()> {
    let map: HashMap<&str, &Tensor> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    for (name, t, _) in module.state_dict() {
        let src = map.get(name.as_str()).ok_or_else(|| {
            CliError::runtime(format!("{}: tensor `{name}` is missing", what.display()))
                .hint("the checkpoint was written for a different model")
        })?;
        if src.dims() != t.dims() {
            return Err(CliError::runtime(format!(
                "{}: tensor `{name}` has shape {:?}, the model expects {:?}",
                what.display(),
                src.dims(),
                t.dims()
            )));
        }
        t.copy_from(&src.to_dtype(t.dtype())?)?;
    }
    Ok(())
}

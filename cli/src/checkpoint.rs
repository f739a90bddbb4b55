//! Reading pretraining checkpoints (written by `spark::train::Trainer`, format
//! `spark::checkpoint::FORMAT`) and copying named tensors into modules.

use crate::error::{CliError, CliResult};
use spark::SparkConfig;
use spark_engine::Tensor;
use spark_nn::Module;
use std::collections::HashMap;
use std::path::Path;

pub use spark::checkpoint::FORMAT;

/// The checkpoint file a run folder holds.
pub const FILE: &str = "last.safetensors";

pub struct Loaded {
    pub spark: SparkConfig,
    pub step: usize,
    /// Model tensors under SparK state-dict names.
    pub model: Vec<(String, Tensor)>,
}

pub fn load(path: &Path) -> CliResult<Loaded> {
    if !path.exists() {
        return Err(CliError::usage(format!("checkpoint {} does not exist", path.display()))
            .hint(format!("pass the {FILE} written by `spark pretrain` (in its --out folder)")));
    }
    let (meta, model, _) = spark::checkpoint::read(path).map_err(|e| {
        CliError::runtime(e.to_string())
            .hint("pretraining checkpoints come from `spark pretrain`; fine-tuned ones from `spark finetune`")
    })?;
    Ok(Loaded { spark: meta.config.model, step: meta.step, model })
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

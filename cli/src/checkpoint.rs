//! Reading pretraining checkpoints (written by `spark::train::Trainer`, format
//! `spark::checkpoint::FORMAT`) and copying named tensors into modules.

use crate::common::{total_memory, StepSize};
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
    check_spark_meta(path, &meta.config.model)?;
    Ok(Loaded { spark: meta.config.model, step: meta.step, model })
}

/// The model settings in a pretraining checkpoint's metadata, read from its header alone (the
/// tensors are not loaded), so that they can be checked before a model is built from them.
/// None when the header holds none: the full read then says what is wrong with the file.
pub fn header_model(path: &Path) -> Option<SparkConfig> {
    header_train_config(path).map(|c| c.model)
}

/// The training config a pretraining checkpoint carries, read from its header alone.
pub fn header_train_config(path: &Path) -> Option<spark::TrainConfig> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut n = [0u8; 8];
    f.read_exact(&mut n).ok()?;
    // safetensors caps its JSON header at 100 MB.
    let n = u64::from_le_bytes(n).min(100 << 20);
    let mut header = Vec::new();
    f.take(n).read_to_end(&mut header).ok()?;
    let json: serde_json::Value = serde_json::from_slice(&header).ok()?;
    let config = json.get("__metadata__")?.get("config")?.as_str()?;
    serde_json::from_str(config).ok()
}

/// Checks the model settings a pretraining checkpoint's metadata holds, like the flags that set
/// them, before anything is allocated from them: a damaged or forged file (`input_size =
/// 1000000`) is an error naming the file and the key, not an allocation failure.
pub fn check_spark_meta(path: &Path, m: &SparkConfig) -> CliResult<()> {
    check_model_meta(path, &m.backbone, m.width_mult, m.input_size, m.decoder_width)?;
    let grid = m.input_size / 32;
    if !(m.mask_ratio > 0.0 && m.mask_ratio < 1.0) || spark::mask::len_keep(grid, grid, m.mask_ratio) == 0 {
        return Err(bad_meta(path, "mask_ratio", m.mask_ratio, "in (0, 1), leaving at least one patch visible"));
    }
    if m.decoder_width < 32 {
        return Err(bad_meta(path, "decoder_width", m.decoder_width, ">= 32"));
    }
    Ok(())
}

/// Checks a model file's backbone, width and input size (`decoder_width` 0: no decoder), and that
/// a forward of one image at that size fits in this machine's memory.
pub fn check_model_meta(
    path: &Path,
    backbone: &str,
    width_mult: f64,
    input_size: usize,
    decoder_width: usize,
) -> CliResult<()> {
    if !spark_nn::BACKBONE_NAMES.contains(&backbone) {
        return Err(bad_meta(path, "backbone", format!("'{backbone}'"), "a name that `spark models` lists"));
    }
    if !(width_mult.is_finite() && width_mult > 0.0) {
        return Err(bad_meta(path, "width_mult", width_mult, "> 0"));
    }
    if input_size == 0 || !input_size.is_multiple_of(32) {
        return Err(bad_meta(path, "input_size", input_size, "a positive multiple of 32"));
    }
    let one = StepSize { backbone, width_mult, input_size, batch_size: 1, decoder_width, encoder_fraction: 1.0 };
    let (act, weights) = one.bytes();
    if total_memory().is_some_and(|total| act + weights > total) {
        return Err(bad_meta(
            path,
            "input_size / width_mult",
            format!("{input_size} / {width_mult}"),
            "a model that fits in this machine's memory for one image",
        ));
    }
    Ok(())
}

fn bad_meta(path: &Path, key: &str, value: impl std::fmt::Display, range: &str) -> CliError {
    CliError::runtime(format!("{}: metadata `{key}` = {value} is out of range (expected {range})", path.display()))
        .hint("the file's metadata is damaged or was not written by spark; use the file its run wrote")
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

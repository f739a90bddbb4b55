//! Pretraining checkpoints (safetensors): model state (`model.<name>`), optimizer moments
//! (`optim.m.<name>`, `optim.v.<name>`), and in the metadata the step, optimizer step, RNG state
//! and the training config as JSON. Written atomically. Plus export of the encoder alone.

use crate::model::SparK;
use crate::optim::Optimizer;
use crate::st_io;
use crate::train::TrainConfig;
use spark_engine::{Error, Result, Rng, Tensor};
use spark_nn::Module;
use std::collections::HashMap;
use std::path::Path;

/// Identifies our checkpoint files.
pub const FORMAT: &str = "spark-pretrain-v1";

/// What a checkpoint holds besides the tensors.
#[derive(Debug, Clone)]
pub struct CheckpointMeta {
    pub config: TrainConfig,
    /// Optimizer steps done.
    pub step: usize,
    pub optim_step: u64,
    pub rng_state: [u64; 4],
    pub last_loss: Option<f64>,
}

/// Writes model, optimizer and metadata to `path` (temp file + rename).
pub fn save(path: &Path, model: &SparK, optimizer: &dyn Optimizer, meta: &CheckpointMeta) -> Result<()> {
    let mut tensors: Vec<(String, Tensor)> =
        model.state_dict().into_iter().map(|(n, t, _)| (format!("model.{n}"), t)).collect();
    for (n, t) in optimizer.moments().named_tensors() {
        tensors.push((format!("optim.{n}"), t));
    }
    let json = |e: serde_json::Error| Error::Msg(format!("checkpoint {}: config to JSON: {e}", path.display()));
    let mut md = HashMap::new();
    md.insert("format".to_string(), FORMAT.to_string());
    md.insert("config".to_string(), serde_json::to_string(&meta.config).map_err(json)?);
    md.insert("step".to_string(), meta.step.to_string());
    md.insert("optim_step".to_string(), meta.optim_step.to_string());
    md.insert("rng_state".to_string(), serde_json::to_string(&meta.rng_state).map_err(json)?);
    if let Some(l) = meta.last_loss {
        md.insert("last_loss".to_string(), format!("{l:e}"));
    }
    st_io::save(path, &tensors, md)
}

/// Reads a checkpoint: metadata, model tensors (names without `model.`) and optimizer tensors
/// (names without `optim.`).
pub fn read(path: &Path) -> Result<(CheckpointMeta, Vec<(String, Tensor)>, Vec<(String, Tensor)>)> {
    let (tensors, md) = st_io::load(path)?;
    let bad = |what: &str| Error::Msg(format!("checkpoint {}: {what}", path.display()));
    if md.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(bad(&format!("not a {FORMAT} file (format = {:?})", md.get("format"))));
    }
    let get = |k: &str| md.get(k).ok_or_else(|| bad(&format!("metadata `{k}` missing")));
    let config: TrainConfig = serde_json::from_str(get("config")?).map_err(|e| bad(&format!("config JSON: {e}")))?;
    let step = get("step")?.parse().map_err(|e| bad(&format!("step: {e}")))?;
    let optim_step = get("optim_step")?.parse().map_err(|e| bad(&format!("optim_step: {e}")))?;
    let rng_state = serde_json::from_str(get("rng_state")?).map_err(|e| bad(&format!("rng_state: {e}")))?;
    let last_loss = md.get("last_loss").and_then(|s| s.parse().ok());
    let (mut model, mut optim) = (Vec::new(), Vec::new());
    for (n, t) in tensors {
        if let Some(k) = n.strip_prefix("model.") {
            model.push((k.to_string(), t));
        } else if let Some(k) = n.strip_prefix("optim.") {
            optim.push((k.to_string(), t));
        } else {
            return Err(bad(&format!("unexpected tensor `{n}`")));
        }
    }
    check_optim_keys(&model, &optim).map_err(|m| bad(&m))?;
    Ok((CheckpointMeta { config, step, optim_step, rng_state, last_loss }, model, optim))
}

/// Every optimizer tensor is `m.<name>` or `v.<name>` of a model tensor `<name>` with its shape,
/// and comes with its partner. The first mismatch, naming the key as stored (`optim.v.<name>`).
fn check_optim_keys(model: &[(String, Tensor)], optim: &[(String, Tensor)]) -> std::result::Result<(), String> {
    let params: HashMap<&str, &[usize]> = model.iter().map(|(n, t)| (n.as_str(), t.dims())).collect();
    let moments: HashMap<&str, &[usize]> = optim.iter().map(|(n, t)| (n.as_str(), t.dims())).collect();
    for (k, t) in optim {
        let (name, other) = match (k.strip_prefix("m."), k.strip_prefix("v.")) {
            (Some(n), _) => (n, format!("v.{n}")),
            (_, Some(n)) => (n, format!("m.{n}")),
            _ => return Err(format!("unexpected optimizer tensor `optim.{k}` (expected optim.m.* or optim.v.*)")),
        };
        let Some(dims) = params.get(name) else {
            return Err(format!("optimizer tensor `optim.{k}` belongs to no model tensor (`model.{name}` is missing)"));
        };
        if t.dims() != *dims {
            return Err(format!(
                "optimizer tensor `optim.{k}` has shape {:?}, but `model.{name}` has {:?}",
                t.dims(),
                dims
            ));
        }
        if !moments.contains_key(other.as_str()) {
            return Err(format!("optimizer tensor `optim.{k}` has no matching `optim.{other}`"));
        }
    }
    Ok(())
}

/// Copies named tensors into the model's parameters and buffers; every model key must be present
/// with its shape, and no extra key may remain.
pub fn load_model_state(model: &SparK, state: &[(String, Tensor)]) -> Result<()> {
    let by_name: HashMap<&str, &Tensor> = state.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let own = model.state_dict();
    for (name, t, _) in &own {
        let src = by_name.get(name.as_str()).ok_or_else(|| Error::Msg(format!("checkpoint: missing `{name}`")))?;
        if src.dims() != t.dims() {
            return Err(Error::Shape {
                op: "load checkpoint",
                msg: format!("`{name}`: checkpoint {:?}, model {:?}", src.dims(), t.dims()),
            });
        }
        t.copy_from(src)?;
    }
    if state.len() != own.len() {
        let names: std::collections::HashSet<&str> = own.iter().map(|(n, _, _)| n.as_str()).collect();
        let extra: Vec<&str> = state.iter().map(|(n, _)| n.as_str()).filter(|n| !names.contains(n)).collect();
        return Err(Error::Msg(format!("checkpoint: unexpected keys {extra:?}")));
    }
    Ok(())
}

/// Restores the RNG of a checkpoint.
pub fn rng_from(meta: &CheckpointMeta) -> Rng {
    Rng::from_state(meta.rng_state)
}

/// Writes the pretrained encoder alone with torchvision / official-ConvNeXt key names (the
/// `sparse_encoder.sp_cnn.` prefix dropped; no decoder, densify or mask tokens;
/// `num_batches_tracked` as I64), loadable by `spark_nn::load_safetensors` and PyTorch.
pub fn export_encoder(model: &SparK, path: &Path) -> Result<()> {
    let enc: &dyn Module = &*model.encoder;
    spark_nn::save_safetensors(enc, path)
}

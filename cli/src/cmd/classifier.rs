//! What fine-tuning, evaluation, prediction and feature extraction share: the classifier
//! checkpoint (a backbone with its head, in safetensors with PyTorch key names, plus metadata:
//! backbone, width, classes, input size) and loading encoder weights from any spark file.

use crate::checkpoint;
use crate::common::{check_f64, out_of_range};
use crate::error::{CliError, CliResult};
use spark_engine::{Rng, Tensor};
use spark_nn::{build_backbone, Backbone, BackboneConfig, Module};
use std::collections::HashMap;
use std::path::Path;

pub const FORMAT: &str = "spark-classifier-v1";
pub const ENCODER_FORMAT: &str = "spark-encoder-v1";
pub const ENCODER_PREFIX: &str = "sparse_encoder.sp_cnn.";

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct ModelSpec {
    pub backbone: String,
    pub width_mult: f64,
    pub input_size: usize,
    /// Class names in label order (empty for an encoder without a head).
    pub classes: Vec<String>,
}

pub fn build(spec: &ModelSpec, drop_path: f64, rng: &mut Rng) -> CliResult<Box<dyn Backbone>> {
    let cfg = BackboneConfig {
        num_classes: spec.classes.len(),
        drop_path,
        width_mult: spec.width_mult,
        ..BackboneConfig::default()
    };
    Ok(build_backbone(&spec.backbone, &cfg, rng)?)
}

pub fn save(path: &Path, model: &dyn Backbone, spec: &ModelSpec, step: usize) -> CliResult<()> {
    let tensors: Vec<(String, Tensor)> = model.state_dict().into_iter().map(|(n, t, _)| (n, t)).collect();
    let mut meta = HashMap::new();
    meta.insert("format".into(), FORMAT.to_string());
    meta.insert("model".into(), serde_json::to_string(spec).unwrap_or_default());
    meta.insert("step".into(), step.to_string());
    spark::st_io::save(path, &tensors, meta)?;
    Ok(())
}

/// A model file of any spark kind: a classifier, a pretraining checkpoint or an exported encoder.
pub enum Weights {
    Classifier {
        spec: ModelSpec,
        tensors: Vec<(String, Tensor)>,
    },
    /// Encoder tensors under backbone names (prefix already stripped), no head.
    Encoder {
        spec: ModelSpec,
        tensors: Vec<(String, Tensor)>,
    },
}

pub fn open(path: &Path) -> CliResult<Weights> {
    if !path.exists() {
        return Err(CliError::usage(format!("model file {} does not exist", path.display()))
            .hint("pass a checkpoint from `spark pretrain`, `spark finetune` or `spark export`"));
    }
    let (tensors, meta) = spark::st_io::load(path)?;
    let bad = |m: &str| CliError::runtime(format!("{}: {m}", path.display()));
    match meta.get("format").map(String::as_str) {
        Some(FORMAT) | Some(ENCODER_FORMAT) => {
            let spec: ModelSpec = serde_json::from_str(meta.get("model").ok_or_else(|| bad("no model metadata"))?)
                .map_err(|e| bad(&format!("model metadata: {e}")))?;
            checkpoint::check_model_meta(path, &spec.backbone, spec.width_mult, spec.input_size, 0)?;
            if meta.get("format").map(String::as_str) == Some(FORMAT) {
                Ok(Weights::Classifier { spec, tensors })
            } else {
                Ok(Weights::Encoder { spec, tensors })
            }
        }
        Some(checkpoint::FORMAT) => {
            let ck = checkpoint::load(path)?;
            let spec = ModelSpec {
                backbone: ck.spark.backbone.clone(),
                width_mult: ck.spark.width_mult,
                input_size: ck.spark.input_size,
                classes: Vec::new(),
            };
            let tensors = ck
                .model
                .into_iter()
                .filter_map(|(n, t)| n.strip_prefix(ENCODER_PREFIX).map(|s| (s.to_string(), t)))
                .collect();
            Ok(Weights::Encoder { spec, tensors })
        }
        _ => Err(bad("not a spark model file (no known `format` metadata)")
            .hint("pass a checkpoint from `spark pretrain`, `spark finetune` or `spark export`")),
    }
}

/// Copies every tensor of `src` whose name the model has; returns (copied, model tensors left
/// untouched). Shape mismatches are errors.
pub fn copy_matching(model: &dyn Module, src: &[(String, Tensor)], what: &Path) -> CliResult<(usize, Vec<String>)> {
    let map: HashMap<&str, &Tensor> = src.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let (mut copied, mut left) = (0, Vec::new());
    for (name, t, _) in model.state_dict() {
        match map.get(name.as_str()) {
            Some(s) if s.dims() == t.dims() => {
                t.copy_from(&s.to_dtype(t.dtype())?)?;
                copied += 1;
            }
            Some(s) => {
                return Err(CliError::runtime(format!(
                    "{}: `{name}` has shape {:?}, the model expects {:?}",
                    what.display(),
                    s.dims(),
                    t.dims()
                )))
            }
            None => left.push(name),
        }
    }
    Ok((copied, left))
}

/// The model flags of `finetune` / `probe` (`--backbone`, `--width-mult`, `--input-size`).
pub struct ModelFlags<'a> {
    pub backbone: Option<&'a str>,
    pub width_mult: Option<f64>,
    pub input_size: Option<usize>,
}

impl ModelFlags<'_> {
    /// Range checks of the flags given, before anything is read or built.
    pub fn validate(&self) -> CliResult<()> {
        if let Some(w) = self.width_mult {
            check_f64("--width-mult", w, 0.0, true, f64::INFINITY, false)?;
        }
        if let Some(s) = self.input_size {
            if s == 0 || !s.is_multiple_of(32) {
                return Err(out_of_range("--input-size", s, "a positive multiple of 32")
                    .hint("the encoder's total stride is 32 px; try 64, 96, 224"));
            }
        }
        Ok(())
    }

    /// The model to build: each flag wins, then the `--init` file's value, then the quick
    /// defaults (ResNet-18 x0.25 at 96 px).
    pub fn resolve(&self, init: Option<&ModelSpec>, classes: Vec<String>) -> ModelSpec {
        ModelSpec {
            backbone: self
                .backbone
                .map(str::to_string)
                .or_else(|| init.map(|s| s.backbone.clone()))
                .unwrap_or_else(|| "resnet18".into()),
            width_mult: self.width_mult.or(init.map(|s| s.width_mult)).unwrap_or(0.25),
            input_size: self.input_size.or(init.map(|s| s.input_size)).unwrap_or(96),
            classes,
        }
    }
}

/// The weights an `--init` flag names, as (their model, their tensors); none without the flag.
pub fn open_init(path: Option<&Path>) -> CliResult<(Option<ModelSpec>, Vec<(String, Tensor)>)> {
    Ok(match path.map(open).transpose()? {
        Some(Weights::Encoder { spec, tensors }) | Some(Weights::Classifier { spec, tensors }) => (Some(spec), tensors),
        None => (None, Vec::new()),
    })
}

/// The error for `--init` weights that do not fit the model built from `spec`.
pub fn does_not_fit(path: &Path, spec: &ModelSpec, copied: usize, missing: &[&String]) -> CliError {
    CliError::runtime(format!(
        "{} does not fit a {} x{}: {copied} tensors copied, missing {:?}",
        path.display(),
        spec.backbone,
        spec.width_mult,
        missing.iter().take(5).collect::<Vec<_>>()
    ))
    .hint("use the same --backbone / --width-mult as the pretrained model")
}

/// Loads a classifier checkpoint ready for inference (eval mode).
pub fn load_classifier(path: &Path) -> CliResult<(Box<dyn Backbone>, ModelSpec)> {
    match open(path)? {
        Weights::Classifier { spec, tensors } => {
            let mut m = build(&spec, 0.0, &mut Rng::new(0))?;
            checkpoint::load_into(m.as_ref(), &tensors, path)?;
            m.eval();
            Ok((m, spec))
        }
        Weights::Encoder { .. } => {
            Err(CliError::usage(format!("{} holds an encoder without a classifier head", path.display()))
                .hint("fine-tune it first: spark finetune --init <that file>"))
        }
    }
}

/// Any model file as a headless or headed backbone in eval mode (for feature extraction).
pub fn load_any(path: &Path) -> CliResult<(Box<dyn Backbone>, ModelSpec)> {
    let (spec, tensors, strict) = match open(path)? {
        Weights::Classifier { spec, tensors } => (spec, tensors, true),
        Weights::Encoder { spec, tensors } => (spec, tensors, true),
    };
    let mut m = build(&spec, 0.0, &mut Rng::new(0))?;
    if strict {
        checkpoint::load_into(m.as_ref(), &tensors, path)?;
    }
    m.eval();
    Ok((m, spec))
}

//! `spark export`: the pretrained encoder alone, with torchvision / official-ConvNeXt key names
//! (no decoder, no mask tokens, BN counters as int64), loadable by PyTorch:
//! `model.load_state_dict(safetensors.torch.load_file(path), strict=False)` reports only the
//! classifier head (`fc.*` / `head.*`) as missing.

use super::classifier::{ModelSpec, ENCODER_FORMAT};
use crate::checkpoint;
use crate::error::{CliResult, Context};
use crate::output::{ensure_not_input, write_atomic};
use clap::Args;
use safetensors::tensor::{Dtype, TensorView};
use spark::SparK;
use spark_engine::Rng;
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    /// A checkpoint written by `spark pretrain`.
    #[arg(long, short = 'c', default_value = "runs/pretrain/last.safetensors")]
    pub checkpoint: PathBuf,
    #[arg(long, short = 'o', default_value = "encoder.safetensors")]
    pub out: PathBuf,
}

pub fn run(a: ExportArgs) -> CliResult<()> {
    ensure_not_input(&a.out, "-o", &[("--checkpoint", &a.checkpoint)])?;
    let ck = checkpoint::load(&a.checkpoint)?;
    let model = SparK::new(ck.spark.clone(), &mut Rng::new(0))?;
    checkpoint::load_into(&model, &ck.model, &a.checkpoint)?;
    let spec = ModelSpec {
        backbone: ck.spark.backbone.clone(),
        width_mult: ck.spark.width_mult,
        input_size: ck.spark.input_size,
        classes: Vec::new(),
    };
    let mut bufs: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, t, _) in model.encoder_state() {
        let (dt, bytes) = if name.ends_with("num_batches_tracked") {
            (Dtype::I64, t.to_vec_f64()?.iter().flat_map(|&v| (v.round() as i64).to_le_bytes()).collect())
        } else {
            (Dtype::F32, t.to_vec_f32()?.iter().flat_map(|v| v.to_le_bytes()).collect())
        };
        bufs.push((name, dt, t.dims().to_vec(), bytes));
    }
    let views = bufs
        .iter()
        .map(|(n, dt, s, b)| TensorView::new(*dt, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<Result<Vec<_>, _>>()
        .ctx(|| "safetensors".into())?;
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), ENCODER_FORMAT.to_string());
    meta.insert("model".to_string(), serde_json::to_string(&spec).unwrap_or_default());
    meta.insert("pretrain_step".to_string(), ck.step.to_string());
    let bytes = safetensors::serialize(views, &Some(meta)).ctx(|| "safetensors".into())?;
    write_atomic(&a.out, &bytes)?;
    let params: usize = bufs
        .iter()
        .filter(|(n, ..)| !n.contains("running_") && !n.ends_with("num_batches_tracked"))
        .map(|(_, _, s, _)| s.iter().product::<usize>())
        .sum();
    outln!(
        "wrote {}: {} tensors ({} parameters) of {} x{} from step {}",
        a.out.display(),
        bufs.len(),
        params,
        spec.backbone,
        spec.width_mult,
        ck.step
    );
    outln!(
        "PyTorch: model.load_state_dict(safetensors.torch.load_file(path), strict=False) -> only the head is missing"
    );
    Ok(())
}

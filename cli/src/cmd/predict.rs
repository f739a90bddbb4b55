//! `spark predict IMAGE...`: class and score per image, like mmpretrain's `inference_model`
//! (eval transform, softmax over the logits, the top classes).

use super::classifier;
use crate::common::{setup_compute_device, setup_precision, setup_threads, CommonOpts};
use crate::error::{CliError, CliResult};
use clap::Args;
use spark::data::{load_image, Transform};
use spark_engine::{no_grad, Rng, Tensor};
use spark_nn::Ctx;
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
pub struct PredictArgs {
    /// Image files (JPEG or PNG).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// A classifier written by `spark finetune`.
    #[arg(long, short = 'c', default_value = "runs/finetune/classifier.safetensors")]
    pub checkpoint: PathBuf,
    /// How many classes to list per image.
    #[arg(long, default_value_t = 3)]
    pub topk: usize,
    /// Print one JSON object per image (pred_label, pred_score, pred_class, pred_scores).
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: PredictArgs, common: CommonOpts) -> CliResult<()> {
    setup_threads(common.threads)?;
    let device = setup_compute_device(common.device.as_deref().unwrap_or("cpu"))?;
    setup_precision(&common)?;
    let (mut model, spec) = classifier::load_classifier(&a.checkpoint)?;
    model.to_device(device)?;
    let t = Transform::eval(spec.input_size);
    let mut ctx = Ctx::new(0);
    let mut failed = 0;
    for path in &a.images {
        let img = match load_image(path) {
            Ok(i) => i,
            Err(e) => {
                errln!("warning: {e}");
                failed += 1;
                continue;
            }
        };
        let x = Tensor::from_vec(t.apply(&img, &mut Rng::new(0)), &[1, 3, spec.input_size, spec.input_size])?
            .to_device(device)?;
        let probs = no_grad(|| model.forward(&x, &mut ctx).and_then(|l| l.softmax(-1)))?.to_vec_f32()?;
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&i, &j| probs[j].total_cmp(&probs[i]));
        if a.json {
            let v = serde_json::json!({
                "image": path.display().to_string(),
                "pred_label": order[0],
                "pred_score": probs[order[0]],
                "pred_class": spec.classes[order[0]],
                "pred_scores": probs,
            });
            outln!("{v}");
        } else {
            let tops: Vec<String> =
                order.iter().take(a.topk.max(1)).map(|&i| format!("{} {:.3}", spec.classes[i], probs[i])).collect();
            outln!("{}: {}", path.display(), tops.join(", "));
        }
    }
    if failed > 0 {
        return Err(CliError::runtime(format!("{failed} of {} images could not be read", a.images.len())));
    }
    Ok(())
}

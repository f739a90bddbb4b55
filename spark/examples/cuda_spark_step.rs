//! The official SparK training step on CUDA — ResNet-50 (or another backbone), 224 px, decoder
//! 768, LAMB with clip 5, batch 128 per GPU — with SparK's own dense simulation of sparsity
//! (`EncoderMode::DenseMasked`, what the official code runs on GPUs): the time per full step
//! (forward, loss, backward, optimizer) and the device memory. scripts/gpu-check.sh runs it
//! beside the official code's numbers (RESULTS.md: 244.0 ms f32, 197.9 ms bf16 on the H200).
//!
//!   cargo run --release -p spark --example cuda_spark_step -- [backbone] [batch] [reps] [f32|bf16]

use spark::optim::Recipe;
use spark::{EncoderMode, SparkConfig, TrainConfig, Trainer};
use spark_engine::{cuda, DType, Device, MatmulPrecision, Rng, Tensor};
use spark_nn::Module;
use std::time::Instant;

fn main() -> spark_engine::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let backbone = args.get(1).map_or("resnet50", |s| s.as_str()).to_string();
    let batch: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(128);
    let reps: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3);
    let bf16 = args.get(4).is_some_and(|s| s == "bf16");
    let dev = match cuda::device(0) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("cuda_spark_step: {e}");
            std::process::exit(2);
        }
    };
    let gpu = Device::Cuda(0);
    let model = SparkConfig::official(&backbone);
    let recipe = if backbone.starts_with("convnext") { Recipe::official_convnext() } else { Recipe::official() };
    let cfg = TrainConfig {
        model,
        recipe: Recipe { batch_size: batch, ..recipe },
        total_steps: 1000,
        warmup_steps: 10,
        accum_steps: 1,
        mode: EncoderMode::DenseMasked,
        seed: 0,
        checkpoint_dir: None,
        checkpoint_every: 0,
        precision: if bf16 { MatmulPrecision::Bf16 } else { MatmulPrecision::F32 },
    };
    let mut trainer = Trainer::new(cfg)?;
    trainer.model.to_device(gpu)?;
    let size = trainer.model.config.input_size;
    let x =
        Tensor::randn(&[batch, 3, size, size], 0.0, 1.0, &mut Rng::new(1), DType::F32, Device::Cpu)?.to_device(gpu)?;
    for _ in 0..2 {
        trainer.train_step(std::slice::from_ref(&x))?;
    }
    dev.synchronize()?;
    dev.reset_peak_memory();
    let mut times = vec![];
    for _ in 0..reps {
        let t = Instant::now();
        let m = trainer.train_step(std::slice::from_ref(&x))?;
        dev.synchronize()?;
        times.push((t.elapsed().as_secs_f64() * 1e3, m.loss));
    }
    times.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (ms, loss) = times[times.len() / 2];
    let (_, peak) = dev.memory_bytes();
    println!(
        "| SparK {backbone} dense-masked step {} | {batch} x {size}px | {ms:.1} ms | {:.0} img/s | loss {loss:.4} | peak tensors {:.1} GiB |",
        if bf16 { "bf16 autocast" } else { "f32" },
        batch as f64 / (ms * 1e-3),
        peak as f64 / (1u64 << 30) as f64
    );
    Ok(())
}

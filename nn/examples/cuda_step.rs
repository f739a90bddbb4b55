//! A dense classifier training step (forward, cross entropy, backward; no optimizer) on CUDA:
//! the time per step and the device memory, for the models and batch of RESULTS.md's
//! PyTorch + cuDNN rows (ResNet-50, 224 px, batch 128). Run by scripts/gpu-check.sh.
//!
//!   cargo run --release -p spark-nn --example cuda_step -- [model] [batch] [size] [reps] [f32|bf16]
//!
//! `bf16` is the engine's autocast: convolution and matmul operands rounded to bf16 on the
//! tensor cores, activations, norms and the loss in f32.

use spark_engine::{cuda, DType, Device, MatmulPrecision, PrecisionScope, Rng, Tensor};
use spark_nn::{build_backbone, BackboneConfig, Ctx};
use std::time::Instant;

fn main() -> spark_engine::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).map_or("resnet50", |s| s.as_str());
    let batch: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(128);
    let size: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(224);
    let reps: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(5);
    let bf16 = args.get(5).is_some_and(|s| s == "bf16");
    let _autocast = PrecisionScope::new(if bf16 { MatmulPrecision::Bf16 } else { MatmulPrecision::F32 });
    let dev = match cuda::device(0) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("cuda_step: {e}");
            std::process::exit(2);
        }
    };
    let gpu = Device::Cuda(0);
    let cfg = BackboneConfig { num_classes: 1000, dtype: DType::F32, ..Default::default() };
    let mut model = build_backbone(name, &cfg, &mut Rng::new(0))?;
    model.to_device(gpu)?;
    let mut rng = Rng::new(1);
    let x = Tensor::randn(&[batch, 3, size, size], 0.0, 1.0, &mut rng, DType::F32, Device::Cpu)?.to_device(gpu)?;
    let targets: Vec<usize> = (0..batch).map(|i| (i * 37) % 1000).collect();
    let step = || -> spark_engine::Result<()> {
        let logits = model.forward(&x, &mut Ctx::new(0))?;
        let loss = logits.cross_entropy(&targets, 0.0)?;
        drop(loss.backward()?);
        dev.synchronize()
    };
    for _ in 0..2 {
        step()?;
    }
    dev.reset_peak_memory();
    let mut times = vec![];
    for _ in 0..reps {
        let t = Instant::now();
        step()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let ms = times[times.len() / 2];
    let (_, peak) = dev.memory_bytes();
    println!(
        "| {name} fwd+bwd {} | {batch} x {size}px | {ms:.1} ms | {:.0} img/s | peak tensors {:.1} GiB |",
        if bf16 { "bf16 autocast" } else { "f32" },
        batch as f64 / (ms * 1e-3),
        peak as f64 / (1u64 << 30) as f64
    );
    Ok(())
}

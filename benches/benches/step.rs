//! One SparK pretraining step (forward + backward + LAMB) in images/s: ResNet-18 at 96 px batch
//! 16 and ResNet-50 at 224 px batch 8, real-sparse encoder vs SparK's dense-masked simulation,
//! and the sparse encoder with bf16 autocast.
//! The ResNet-50 case runs only with `SPARK_BENCH_R50=1` (minutes per step on a small CPU; criterion
//! needs 10 samples).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use spark::optim::Recipe;
use spark::{EncoderMode, SparkConfig, TrainConfig, Trainer};
use spark_engine::{DType, Device, MatmulPrecision, Rng, Tensor};
use std::time::Duration;

fn trainer(backbone: &str, size: usize, mode: EncoderMode, precision: MatmulPrecision) -> Trainer {
    let model = SparkConfig { input_size: size, ..SparkConfig::official(backbone) };
    let cfg = TrainConfig {
        model,
        recipe: Recipe::official(),
        total_steps: 1_000_000,
        warmup_steps: 10,
        accum_steps: 1,
        mode,
        seed: 0,
        checkpoint_dir: None,
        checkpoint_every: 0,
        precision,
    };
    Trainer::new(cfg).expect("build trainer")
}

fn bench_step(c: &mut Criterion) {
    // Freed memory stays in the process, as in the `spark` binary (no page faults per call).
    spark_engine::cpu::malloc::keep_freed_memory();
    let mut cases = vec![("resnet18", 96, 16)];
    if std::env::var("SPARK_BENCH_R50").is_ok() {
        cases.push(("resnet50", 224, 8));
    }
    let mut g = c.benchmark_group("spark_step");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(10));
    for (backbone, size, batch) in cases {
        let x = Tensor::randn(&[batch, 3, size, size], 0.0, 1.0, &mut Rng::new(1), DType::F32, Device::Cpu).unwrap();
        g.throughput(Throughput::Elements(batch as u64));
        for (mode, precision, tag) in [
            (EncoderMode::Sparse, MatmulPrecision::F32, "sparse"),
            (EncoderMode::DenseMasked, MatmulPrecision::F32, "dense_masked"),
            (EncoderMode::Sparse, MatmulPrecision::Bf16, "sparse_bf16"),
        ] {
            let mut t = trainer(backbone, size, mode, precision);
            g.bench_function(format!("{backbone}_{size}px_b{batch}_{tag}"), |b| {
                b.iter(|| t.train_step(std::slice::from_ref(&x)).expect("step"))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench_step);
criterion_main!(benches);

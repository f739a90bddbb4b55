//! SGEMM throughput (GFLOP/s via criterion's element throughput = FLOPs) at square sizes, on
//! the default (fastest) path, on every other SIMD path this CPU has, and with bf16 products
//! where the CPU multiplies bf16 natively.
//! `cargo bench -p spark-benches --bench gemm -- --warm-up-time 1 --measurement-time 3`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use spark_engine::cpu::gemm::{available_paths, gemm, gemm_with_path, MatRef};
use spark_engine::{bf16_native, MatmulPrecision, Rng};

fn bench_gemm(c: &mut Criterion) {
    // Freed memory stays in the process, as in the `spark` binary (no page faults per call).
    spark_engine::cpu::malloc::keep_freed_memory();
    let mut rng = Rng::new(1);
    let mut group = c.benchmark_group("sgemm");
    group.sample_size(10);
    for n in [256usize, 512, 1024, 2048] {
        let a: Vec<f32> = (0..n * n).map(|_| rng.normal() as f32).collect();
        let b: Vec<f32> = (0..n * n).map(|_| rng.normal() as f32).collect();
        let mut out = vec![0.0f32; n * n];
        // Criterion reports "elements/s": here one element = one floating-point operation.
        group.throughput(Throughput::Elements(2 * (n * n * n) as u64));
        group.bench_function(BenchmarkId::new("default", n), |bch| {
            bch.iter(|| gemm(MatRef::new(&a, n, n), MatRef::new(&b, n, n), &mut out, n, false))
        });
        if n <= 1024 {
            for path in available_paths().into_iter().skip(1) {
                group.bench_function(BenchmarkId::new(format!("{path:?}"), n), |bch| {
                    bch.iter(|| {
                        let (a, b) = (MatRef::new(&a, n, n), MatRef::new(&b, n, n));
                        gemm_with_path(path, MatmulPrecision::F32, a, b, &mut out, n, false)
                    })
                });
            }
        }
        if bf16_native() {
            let path = available_paths()[0];
            group.bench_function(BenchmarkId::new("bf16", n), |bch| {
                bch.iter(|| {
                    let (a, b) = (MatRef::new(&a, n, n), MatRef::new(&b, n, n));
                    gemm_with_path(path, MatmulPrecision::Bf16, a, b, &mut out, n, false)
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_gemm);
criterion_main!(benches);

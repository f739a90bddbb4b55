//! `spark bench`: timing tables measured in one run, so the ratios compare like with like.
//! gemm: the engine's SGEMM on each SIMD path the CPU has, against a naive triple loop;
//! conv: dense conv2d forward and forward+backward on ResNet / ConvNeXt layer shapes;
//! sparse: spark-sparse's sparse vs dense-masked table over mask ratios;
//! step: one SparK pretraining step (forward + backward + LAMB or AdamW), sparse vs dense-masked
//! encoder.

use super::pretrain::PretrainConfig;
use crate::common::{compute_threads, setup_device, setup_precision, setup_threads, CommonOpts};
use crate::error::{CliError, CliResult};
use clap::{Args, Subcommand};
use spark::optim::{optim_params, OptimizerKind, Recipe};
use spark::{EncoderMode, SparK};
use spark_engine::cpu::gemm::{available_paths, gemm_with_path, MatRef};
use spark_engine::{bf16_native, Conv2dParams, DType, Device, MatmulPrecision, Rng, Tensor};
use spark_nn::Module;
use std::time::Instant;

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchWhat,
    /// Repetitions per measurement (the median is reported).
    #[arg(long, default_value_t = 3, global = true)]
    pub reps: usize,
    /// Run 3x3 stride-1 dense convs on the implicit GEMM instead of Winograd F(2x2,3x3), e.g. to
    /// compare sparse convs with the plain im2col dense-masked conv.
    #[arg(long, global = true)]
    pub no_winograd: bool,
}

#[derive(Subcommand, Debug, Clone)]
pub enum BenchWhat {
    /// SGEMM GFLOP/s per SIMD path vs a naive loop.
    Gemm {
        /// Square sizes to time.
        #[arg(long, value_delimiter = ',', default_values_t = [128usize, 256, 512, 1024])]
        sizes: Vec<usize>,
    },
    /// Dense conv2d on ResNet-50 / ConvNeXt layer shapes.
    Conv {
        #[arg(long, default_value_t = 8)]
        batch: usize,
    },
    /// Sparse vs dense-masked convolution over mask ratios.
    Sparse {
        #[arg(long, default_value_t = 8)]
        batch: usize,
        #[arg(long, value_delimiter = ',', default_values_t = [0.0f64, 0.3, 0.6, 0.9])]
        ratios: Vec<f64>,
    },
    /// One SparK pretraining step, sparse vs dense-masked encoder.
    Step {
        #[arg(long, default_value = "quick")]
        preset: String,
        #[arg(long)]
        backbone: Option<String>,
        #[arg(long)]
        width_mult: Option<f64>,
        #[arg(long)]
        input_size: Option<usize>,
        #[arg(long, default_value_t = 16)]
        batch: usize,
        /// Also print where each encoder's backward spends its time (op, output shape).
        #[arg(long)]
        profile: bool,
        /// lamb (SparK's) or adamw (with the recipe's grad-norm clip 5, like the AdamW rows of
        /// `scripts/torch_spark_step.py`).
        #[arg(long, default_value = "lamb")]
        optimizer: String,
    },
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time<F: FnMut() -> CliResult<()>>(reps: usize, mut f: F) -> CliResult<f64> {
    f()?; // warm-up (packing buffers, page faults)
    let mut v = Vec::new();
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        f()?;
        v.push(t.elapsed().as_secs_f64());
    }
    Ok(median(v))
}

/// The slowest backward entries of `steps` steps, in ms per step.
fn print_backward_profile(name: &str, rows: &[(String, spark_engine::profile::Entry)], steps: usize) {
    let total: f64 = rows.iter().map(|r| r.1.seconds).sum();
    let per_step = |s: f64| s * 1e3 / steps.max(1) as f64;
    outln!("\nbackward of the {name} step: {:.0} ms per step in ops; slowest:", per_step(total));
    outln!("| op -> output shape | calls / step | ms / step | share |");
    outln!("|---|---|---|---|");
    for (key, e) in rows.iter().take(25) {
        outln!(
            "| {key} | {:.0} | {:.1} | {:.1}% |",
            e.calls as f64 / steps.max(1) as f64,
            per_step(e.seconds),
            100.0 * e.seconds / total.max(1e-12)
        );
    }
}

fn naive_gemm(a: &[f32], b: &[f32], c: &mut [f32], n: usize) {
    c.iter_mut().for_each(|v| *v = 0.0);
    for i in 0..n {
        for k in 0..n {
            let aik = a[i * n + k];
            let (brow, crow) = (&b[k * n..(k + 1) * n], &mut c[i * n..(i + 1) * n]);
            for j in 0..n {
                crow[j] += aik * brow[j];
            }
        }
    }
}

pub fn run(a: BenchArgs, common: CommonOpts) -> CliResult<()> {
    setup_threads(common.threads)?;
    setup_device(common.device.as_deref().unwrap_or("cpu"))?;
    spark_engine::cpu::conv_winograd::set_enabled(!a.no_winograd);
    // Applies to the conv, sparse and step benches; the gemm table always shows both.
    let precision = setup_precision(&common)?;
    outln!(
        "spark bench ({} compute threads; median of {} runs; dense 3x3 convs: {}; matmul precision: {}{})",
        compute_threads(),
        a.reps.max(1),
        if a.no_winograd { "implicit GEMM" } else { "Winograd" },
        precision.name(),
        if precision == MatmulPrecision::Bf16 && !bf16_native() { " (emulated: no AVX512-BF16)" } else { "" }
    );
    match a.what {
        BenchWhat::Gemm { sizes } => {
            // Every f32 SIMD path, then bf16 products on the fastest one where the CPU has them.
            let mut paths: Vec<_> = available_paths().into_iter().map(|p| (p, MatmulPrecision::F32)).collect();
            if bf16_native() {
                paths.push((paths[0].0, MatmulPrecision::Bf16));
            }
            out!("| n |");
            for (p, prec) in &paths {
                out!(" {p:?} {} GFLOP/s |", prec.name());
            }
            outln!(" naive GFLOP/s | best / naive |");
            outln!("|---|{}---|---|", "---|".repeat(paths.len()));
            let mut rng = Rng::new(1);
            for n in sizes {
                let a_: Vec<f32> = (0..n * n).map(|_| rng.normal() as f32).collect();
                let b_: Vec<f32> = (0..n * n).map(|_| rng.normal() as f32).collect();
                let mut c = vec![0f32; n * n];
                let flops = 2.0 * (n as f64).powi(3);
                out!("| {n} |");
                let mut best: f64 = 0.0;
                for &(p, prec) in &paths {
                    let t = time(a.reps, || {
                        gemm_with_path(p, prec, MatRef::new(&a_, n, n), MatRef::new(&b_, n, n), &mut c, n, false)?;
                        Ok(())
                    })?;
                    best = best.max(flops / t / 1e9);
                    out!(" {:.1} |", flops / t / 1e9);
                }
                // The naive loop is single-threaded and slow: time it once, on sizes up to 1024.
                if n <= 1024 {
                    let t = time(1, || {
                        naive_gemm(&a_, &b_, &mut c, n);
                        Ok(())
                    })?;
                    outln!(" {:.2} | {:.1}x |", flops / t / 1e9, best / (flops / t / 1e9));
                } else {
                    outln!(" - | - |");
                }
            }
        }
        BenchWhat::Conv { batch } => {
            outln!("| layer | batch | fwd ms | fwd GFLOP/s | fwd+bwd ms | bwd / fwd |");
            outln!("|---|---|---|---|---|---|");
            let mut rng = Rng::new(2);
            for s in spark_sparse::bench::resnet_convnext_shapes() {
                let x = Tensor::randn(&[batch, s.cin, s.hw, s.hw], 0.0, 1.0, &mut rng, DType::F32, Device::Cpu)?;
                let w = Tensor::randn(
                    &[s.cout, s.cin / s.groups, s.kernel, s.kernel],
                    0.0,
                    0.1,
                    &mut rng,
                    DType::F32,
                    Device::Cpu,
                )?
                .to_variable();
                let p = Conv2dParams { groups: s.groups, ..Conv2dParams::new(s.stride, s.padding) };
                let fwd = time(a.reps, || {
                    spark_engine::no_grad(|| x.conv2d(&w, None, p))?;
                    Ok(())
                })?;
                let xv = x.to_variable();
                let both = time(a.reps, || {
                    let y = xv.conv2d(&w, None, p)?;
                    y.sum_all()?.backward()?;
                    Ok(())
                })?;
                let ho = (s.hw + 2 * s.padding - s.kernel) / s.stride + 1;
                let flops = 2.0 * (batch * s.cout * ho * ho * (s.cin / s.groups) * s.kernel * s.kernel) as f64;
                outln!(
                    "| {} | {batch} | {:.2} | {:.1} | {:.2} | {:.2} |",
                    s.name,
                    fwd * 1e3,
                    flops / fwd / 1e9,
                    both * 1e3,
                    (both - fwd) / fwd
                );
            }
        }
        BenchWhat::Sparse { batch, ratios } => {
            let shapes = spark_sparse::bench::resnet_convnext_shapes();
            let rows = spark_sparse::bench::sparse_vs_dense_table(&shapes, batch, &ratios, a.reps.max(1))?;
            outln!("{}", spark_sparse::bench::format_table(&rows));
        }
        BenchWhat::Step { preset, backbone, width_mult, input_size, batch, profile, optimizer } => {
            let mut c = PretrainConfig::preset(&preset)?;
            c.backbone = backbone.unwrap_or(c.backbone);
            c.width_mult = width_mult.unwrap_or(c.width_mult);
            c.input_size = input_size.unwrap_or(c.input_size);
            if batch < 2 {
                return Err(CliError::usage("--batch must be at least 2"));
            }
            let sc = c.spark_config();
            let mut rng = Rng::new(3);
            let mut model = SparK::new(sc.clone(), &mut rng)?;
            model.train();
            let mut recipe = Recipe::official();
            recipe.optimizer = match optimizer.as_str() {
                "lamb" => OptimizerKind::Lamb,
                "adamw" => OptimizerKind::AdamW,
                o => return Err(CliError::usage(format!("--optimizer '{o}': use lamb or adamw"))),
            };
            let params = optim_params(&model.trainable_parameters(), &recipe.no_decay);
            let x =
                Tensor::randn(&[batch, 3, sc.input_size, sc.input_size], 0.0, 1.0, &mut rng, DType::F32, Device::Cpu)?;
            outln!(
                "SparK step: {} x{} at {} px, batch {batch}, mask {:.2}, decoder {}, {optimizer}",
                sc.backbone,
                sc.width_mult,
                sc.input_size,
                sc.mask_ratio,
                sc.decoder_width
            );
            outln!(
                "| encoder | step ms | images/s | vs dense-masked | fwd / bwd / optimizer ms | peak heap MB (model + state: {:.0}) |",
                crate::alloc_stats::current_bytes() as f64 / 1e6
            );
            outln!("|---|---|---|---|---|---|");
            let mut res = Vec::new();
            let mut profiles = Vec::new();
            for mode in [EncoderMode::DenseMasked, EncoderMode::Sparse] {
                spark_engine::profile::set_backward_profiling(profile);
                let mut opt = recipe.build_optimizer();
                let mut r = Rng::new(4);
                crate::alloc_stats::reset_peak();
                // Phase times of every timed step (the warm-up's are dropped below).
                let mut phases: Vec<[f64; 3]> = Vec::new();
                let t = time(a.reps, || {
                    let t0 = Instant::now();
                    let mask = model.sample_mask(batch, &mut r)?;
                    let out = model.forward(&x, &mask, mode, &mut r)?;
                    let t1 = Instant::now();
                    let g = out.loss.backward()?;
                    let t2 = Instant::now();
                    opt.step(&params, &g, 1e-4, 0.04)?;
                    phases.push([t1 - t0, t2 - t1, t2.elapsed()].map(|d| d.as_secs_f64() * 1e3));
                    Ok(())
                })?;
                res.push(t);
                let name = if mode == EncoderMode::Sparse { "sparse" } else { "dense-masked" };
                if profile {
                    spark_engine::profile::set_backward_profiling(false);
                    profiles.push((name, spark_engine::profile::backward_profile(), phases.len()));
                }
                let peak_mb = crate::alloc_stats::peak_bytes() as f64 / 1e6;
                let phase = |i: usize| median(phases.iter().skip(1).map(|p| p[i]).collect());
                outln!(
                    "| {name} | {:.1} | {:.1} | {:.2}x | {:.0} / {:.0} / {:.0} | {peak_mb:.0} |",
                    t * 1e3,
                    batch as f64 / t,
                    res[0] / t,
                    phase(0),
                    phase(1),
                    phase(2)
                );
            }
            for (name, rows, steps) in profiles {
                print_backward_profile(name, &rows, steps);
            }
        }
    }
    Ok(())
}

//! GPU figures of the CUDA backend: GEMM throughput (f32 CUDA cores, bf16 tensor cores) and
//! elementwise bandwidth, each the median of timed repetitions after warm-ups, one table.
//! Run by scripts/gpu-check.sh beside PyTorch's cuBLAS numbers from the same machine and run.
//!
//!   cargo run --release -p spark-engine --example cuda_bench

use spark_engine::cuda::{self, Binary, CudaDevice, GemmShape};
use std::time::Instant;

/// Median milliseconds of `reps` calls of `f` (each synchronised), after 3 warm-ups.
fn time_ms(
    dev: &CudaDevice,
    reps: usize,
    mut f: impl FnMut() -> spark_engine::Result<()>,
) -> spark_engine::Result<f64> {
    for _ in 0..3 {
        f()?;
    }
    dev.synchronize()?;
    let mut t = vec![];
    for _ in 0..reps {
        let s = Instant::now();
        f()?;
        dev.synchronize()?;
        t.push(s.elapsed().as_secs_f64() * 1e3);
    }
    t.sort_by(|a, b| a.total_cmp(b));
    Ok(t[t.len() / 2])
}

fn main() -> spark_engine::Result<()> {
    let dev = match cuda::device(0) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("cuda_bench: {e}");
            std::process::exit(2);
        }
    };
    println!("device: {} (sm_{}{})", dev.name(), dev.capability().0, dev.capability().1);
    println!("| kernel | shape | ms | TFLOP/s or GB/s |");
    println!("|---|---|---|---|");
    for &(n, prec) in &[(4096usize, "f32"), (4096, "bf16"), (8192, "bf16"), (2048, "f32"), (2048, "bf16")] {
        let s = GemmShape::plain(n, n, n, false, false);
        let a: Vec<f32> = (0..n * n).map(|i| ((i % 97) as f32 - 48.0) / 97.0).collect();
        let mut c = dev.alloc_zeroed(n * n)?;
        let ms = if prec == "f32" {
            let (da, db) = (dev.upload(&a)?, dev.upload(&a)?);
            time_ms(&dev, 10, || dev.gemm_f32(&s, 1.0, &da.slice(..), &db.slice(..), 0.0, &mut c.slice_mut(..)))?
        } else {
            let bits: Vec<u16> = a.iter().map(|&x| half::bf16::from_f32(x).to_bits()).collect();
            let (da, db) = (dev.upload(&bits)?, dev.upload(&bits)?);
            time_ms(&dev, 10, || dev.gemm_bf16(&s, 1.0, &da.slice(..), &db.slice(..), 0.0, &mut c.slice_mut(..)))?
        };
        let tflops = 2.0 * (n as f64).powi(3) / (ms * 1e-3) / 1e12;
        println!("| gemm {prec} nn | {n}^3 | {ms:.3} | {tflops:.1} TFLOP/s |");
    }
    // The transposed forms used by backward passes, at a conv-like shape (Cout 256, K 2304).
    for (ta, tb) in [(false, true), (true, false)] {
        let (m, n, k) = (256, 200_704 / 4, 2304);
        let s = GemmShape::plain(m, n, k, ta, tb);
        let a: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 / 13.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 / 7.0).collect();
        let (da, db) = (dev.upload(&a)?, dev.upload(&b)?);
        let mut c = dev.alloc_zeroed(m * n)?;
        let ms = time_ms(&dev, 10, || dev.gemm_f32(&s, 1.0, &da.slice(..), &db.slice(..), 0.0, &mut c.slice_mut(..)))?;
        let tflops = 2.0 * (m * n * k) as f64 / (ms * 1e-3) / 1e12;
        println!(
            "| gemm f32 {}{} | {m}x{n}x{k} | {ms:.3} | {tflops:.1} TFLOP/s |",
            if ta { "t" } else { "n" },
            if tb { "t" } else { "n" }
        );
    }
    let n = 64 << 20;
    let x = dev.upload(&vec![1.5f32; n])?;
    let y = dev.upload(&vec![0.5f32; n])?;
    let mut out = None;
    let ms = time_ms(&dev, 20, || {
        out = Some(dev.binary(Binary::Add, &x, &y, n)?);
        Ok(())
    })?;
    println!("| add f32 | {n} elements | {ms:.3} | {:.0} GB/s |", 12.0 * n as f64 / (ms * 1e-3) / 1e9);
    let ms = time_ms(&dev, 20, || dev.sum_of_squares(&x, n).map(|_| ()))?;
    println!("| sum of squares f32 | {n} elements | {ms:.3} | {:.0} GB/s |", 4.0 * n as f64 / (ms * 1e-3) / 1e9);
    Ok(())
}

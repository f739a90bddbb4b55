//! Transposed-conv forward, adjoint vs sub-pixel: `conv2d_backward_input` of the matching conv2d
//! (GEMM into a column matrix, then col2im) against `subpixel_forward` (one stride-1 GEMM conv
//! per output phase), on SparK decoder shapes (stride 2, doubling the side), f32, no bias.
//! Median wall and CPU time (all threads) of 10 runs each, the two paths alternating so machine
//! noise hits both alike. `conv_transpose2d` picks between them by `SUBPIXEL_MIN_L`.
//! `cargo run --release -p spark-engine --example convt_timing [shape index]`

use spark_engine::cpu::conv::{conv2d_backward_input, ConvGeom};
use spark_engine::cpu::conv_transpose::subpixel_forward;
use spark_engine::{DType, Device, Rng, Tensor};
use std::time::Instant;

fn main() {
    // Freed memory stays in the process, as in the `spark` binary (no page faults per call).
    spark_engine::cpu::malloc::keep_freed_memory();
    // (n, cin, cout, input side, k) of a stride-2 ConvTranspose2d(cin, cout, k).
    let shapes = [
        (16, 768, 384, 3, 4),
        (8, 768, 384, 7, 4),
        (16, 384, 192, 6, 4),
        (16, 192, 96, 12, 4),
        (16, 96, 48, 24, 4),
        (16, 64, 32, 32, 4),
        (16, 48, 24, 48, 4),
        (16, 48, 24, 48, 3),
        (16, 48, 24, 48, 5),
    ];
    let only: Option<usize> = std::env::args().nth(1).and_then(|a| a.parse().ok());
    println!("threads {}", rayon::current_num_threads());
    println!("| shape | adjoint wall / cpu (ms) | sub-pixel wall / cpu (ms) | wall new/old |");
    println!("|---|---|---|---|");
    for (si, (n, cin, cout, s, k)) in shapes.into_iter().enumerate() {
        if only.is_some_and(|o| o != si) {
            continue;
        }
        let rnd = |len: usize, seed| {
            let t = Tensor::randn(&[len], 0.0, 1.0, &mut Rng::new(seed), DType::F32, Device::Cpu).unwrap();
            t.to_vec_f64().unwrap().into_iter().map(|v| v as f32).collect::<Vec<f32>>()
        };
        // The conv2d this transposed conv is the adjoint of: its input is our output. Padding
        // k/2 - 1 + k%2 makes the output exactly 2s (output_padding 1 for odd k).
        let p = k / 2 - 1 + k % 2;
        let g = ConvGeom {
            n,
            cin: cout,
            h: 2 * s,
            w: 2 * s,
            cout: cin,
            kh: k,
            kw: k,
            oh: s,
            ow: s,
            stride: [2, 2],
            pad: [p, p],
            dil: [1, 1],
            groups: 1,
        };
        let (x, w) = (rnd(g.out_len(), 1), rnd(g.weight_len(), 2));
        let old = conv2d_backward_input(&x, &w, &g);
        let mut y = vec![0.0f32; g.in_len()];
        subpixel_forward(&x, &w, None, &g, &mut y);
        let err = old.iter().zip(&y).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(err < 1e-3, "paths disagree by {err}");
        let (mut t_old, mut t_new, mut c_old, mut c_new) = (vec![], vec![], vec![], vec![]);
        for _ in 0..10 {
            let (t, c) = (Instant::now(), cpu_ms());
            std::hint::black_box(conv2d_backward_input(&x, &w, &g));
            t_old.push(t.elapsed().as_secs_f64() * 1e3);
            c_old.push(cpu_ms() - c);
            let (t, c) = (Instant::now(), cpu_ms());
            let mut y = vec![0.0f32; g.in_len()];
            subpixel_forward(&x, &w, None, &g, &mut y);
            std::hint::black_box(&y);
            t_new.push(t.elapsed().as_secs_f64() * 1e3);
            c_new.push(cpu_ms() - c);
        }
        let (mo, mn, co, cn) = (median(&mut t_old), median(&mut t_new), median(&mut c_old), median(&mut c_new));
        println!(
            "| {k}x{k} {cin}->{cout} {s}x{s} -> {}x{} n{n} | {mo:.1} / {co:.1} | {mn:.1} / {cn:.1} | {:.2} |",
            2 * s,
            2 * s,
            mn / mo
        );
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2] + v[(v.len() - 1) / 2]) / 2.0
}

/// CPU time of this process (all threads) in ms, from /proc.
fn cpu_ms() -> f64 {
    let mut ns = 0u64;
    for e in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
        if let Ok(s) = std::fs::read_to_string(e.path().join("schedstat")) {
            ns += s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    ns as f64 * 1e-6
}

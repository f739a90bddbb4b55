//! Weight gradient of 3x3 stride-1 convs on the SparK decoders' and ResNets' levels: Winograd
//! F(2x2,3x3) against the implicit GEMM, same inputs, interleaved best-of-N.
//! `cargo run --release -p spark-engine --example winograd_dw_timing`

use spark_engine::cpu::conv::ConvGeom;
use spark_engine::cpu::{conv_implicit, conv_winograd};
use spark_engine::Rng;
use std::time::Instant;

/// (batch, channels, map side): the ResNet-18 / 96 px decoder's levels at batch 16, ResNet-18/50
/// encoder 3x3 convs, and the ResNet-50 / 224 px decoder's levels at batch 8.
const SHAPES: [(usize, usize, usize); 18] = [
    (16, 384, 12),
    (16, 384, 6),
    (16, 192, 24),
    (16, 192, 12),
    (16, 96, 48),
    (16, 48, 96),
    (16, 64, 24),
    (16, 128, 12),
    (16, 256, 6),
    (16, 64, 56),
    (16, 128, 28),
    (16, 256, 14),
    (16, 512, 7),
    (8, 768, 14),
    (8, 384, 28),
    (8, 192, 56),
    (8, 96, 112),
    (8, 48, 224),
];

fn main() {
    // Freed memory stays in the process, as in the `spark` binary (no page faults per call).
    spark_engine::cpu::malloc::keep_freed_memory();
    let mut rng = Rng::new(1);
    for (n, c, hw) in SHAPES {
        let g = ConvGeom {
            n,
            cin: c,
            h: hw,
            w: hw,
            cout: c,
            kh: 3,
            kw: 3,
            oh: hw,
            ow: hw,
            stride: [1, 1],
            pad: [1, 1],
            dil: [1, 1],
            groups: 1,
        };
        let x: Vec<f32> = (0..g.in_len()).map(|_| rng.normal() as f32).collect();
        let dy: Vec<f32> = (0..g.out_len()).map(|_| rng.normal() as f32).collect();
        let mut gw = vec![0.0f32; g.weight_len()];
        let (mut best_w, mut best_i) = (f64::MAX, f64::MAX);
        for _ in 0..6 {
            let t = Instant::now();
            conv_winograd::backward_weight(&x, &dy, &g, &mut gw);
            best_w = best_w.min(t.elapsed().as_secs_f64());
            let t = Instant::now();
            conv_implicit::backward_weight(&x, &dy, &g, &mut gw);
            best_i = best_i.min(t.elapsed().as_secs_f64());
        }
        println!(
            "b{n} {c}->{c} @{hw}x{hw}: winograd {:.1} ms, implicit {:.1} ms ({:.2}x)",
            best_w * 1e3,
            best_i * 1e3,
            best_i / best_w
        );
    }
}

//! Weight gradient of 3x3 stride-1 convs on the SparK decoder's levels (batch 16, width 768):
//! Winograd F(2x2,3x3) against the implicit GEMM, same inputs, interleaved best-of-N.
//! `cargo run --release -p spark-engine --example winograd_dw_timing`

use spark_engine::cpu::conv::ConvGeom;
use spark_engine::cpu::{conv_implicit, conv_winograd};
use spark_engine::Rng;
use std::time::Instant;

/// (channels, map side): the decoder's levels, then ResNet-18/50 encoder 3x3 convs at 96 and 224 px.
const SHAPES: [(usize, usize); 13] = [
    (384, 12),
    (384, 6),
    (192, 24),
    (192, 12),
    (96, 48),
    (48, 96),
    (64, 24),
    (128, 12),
    (256, 6),
    (64, 56),
    (128, 28),
    (256, 14),
    (512, 7),
];

fn main() {
    let mut rng = Rng::new(1);
    for (c, hw) in SHAPES {
        let g = ConvGeom {
            n: 16,
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
            "{c}->{c} @{hw}x{hw}: winograd {:.1} ms, implicit {:.1} ms ({:.2}x)",
            best_w * 1e3,
            best_i * 1e3,
            best_i / best_w
        );
    }
}

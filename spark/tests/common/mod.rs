//! Shared helpers: small configs and a deterministic, structured synthetic image source.
#![allow(dead_code)]

use spark::optim::Recipe;
use spark::{EncoderMode, SparkConfig, TrainConfig};
use spark_engine::{MatmulPrecision, Result, Rng, Tensor};

/// Smooth coloured images, roughly unit variance: a centred radial shading (predictable from the
/// patch position) with a random per-channel gain, a random ramp (predictable from the visible
/// patches), a weak low-frequency wave and a disc. Batch `index` is a pure function of
/// (seed, index).
pub fn synthetic_batch(seed: u64, index: u64, batch: usize, size: usize) -> Tensor {
    let mut rng = Rng::new(seed.wrapping_mul(0x9E37_79B9).wrapping_add(index));
    let mut v = Vec::with_capacity(batch * 3 * size * size);
    for _ in 0..batch {
        let (ax, ay) = (rng.normal(), rng.normal());
        let theta = rng.uniform() * std::f64::consts::TAU;
        let freq = 1.0 + 2.0 * rng.uniform();
        let phase = rng.uniform() * std::f64::consts::TAU;
        let (cx, cy, r) = (rng.uniform(), rng.uniform(), 0.15 + 0.2 * rng.uniform());
        let colour: Vec<f64> = (0..3).map(|_| rng.normal()).collect();
        let tint: Vec<f64> = (0..3).map(|_| rng.normal()).collect();
        for c in 0..3 {
            for y in 0..size {
                for x in 0..size {
                    let (u, w) = (x as f64 / size as f64, y as f64 / size as f64);
                    let wave = (std::f64::consts::TAU * freq * (u * theta.cos() + w * theta.sin()) + phase).sin();
                    let disc = if (u - cx).powi(2) + (w - cy).powi(2) < r * r { 1.0 } else { 0.0 };
                    let radial = 1.0 - 2.0 * ((u - 0.5).powi(2) + (w - 0.5).powi(2)).sqrt();
                    let gain = 1.0 + 0.3 * colour[c];
                    v.push(
                        1.5 * gain * radial
                            + 0.6 * (ax * (u - 0.5) + ay * (w - 0.5))
                            + 0.15 * tint[c] * wave
                            + 0.3 * colour[c] * disc,
                    );
                }
            }
        }
    }
    Tensor::from_vec(v.into_iter().map(|x| x as f32).collect::<Vec<f32>>(), &[batch, 3, size, size]).unwrap()
}

/// An endless deterministic batch source starting at batch `start`.
pub fn source(seed: u64, start: u64, batch: usize, size: usize) -> impl Iterator<Item = Result<Tensor>> {
    (start..).map(move |i| Ok(synthetic_batch(seed, i, batch, size)))
}

/// ResNet-18 with one block per stage at 1/4 width, 64 px, decoder width `dec`.
pub fn tiny_model(dec: usize) -> SparkConfig {
    SparkConfig {
        width_mult: 0.25,
        depths: Some(vec![1, 1, 1, 1]),
        drop_path: 0.0,
        input_size: 64,
        decoder_width: dec,
        ..SparkConfig::official("resnet18")
    }
}

pub fn tiny_train(total_steps: usize, peak_lr: f64) -> TrainConfig {
    let mut recipe = Recipe::official();
    recipe.batch_size = 256;
    recipe.base_lr = peak_lr; // peak = base_lr * 256 / 256
    TrainConfig {
        model: tiny_model(64),
        recipe,
        total_steps,
        warmup_steps: total_steps / 10,
        accum_steps: 1,
        mode: EncoderMode::Sparse,
        seed: 7,
        checkpoint_dir: None,
        checkpoint_every: 0,
        precision: MatmulPrecision::F32,
    }
}

pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("spark-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

//! bf16 autocast of a pretraining run (`TrainConfig::precision`). Its own test binary: the
//! matmul precision is process-wide, and the tests here take a lock so that the f32 side of a
//! comparison never runs while another test has bf16 on.

mod common;

use common::*;
use spark::Trainer;
use spark_engine::{matmul_precision, MatmulPrecision};
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

static PRECISION_LOCK: Mutex<()> = Mutex::new(());

fn one_step(precision: MatmulPrecision) -> (f64, f64) {
    let mut cfg = tiny_train(4, 2e-3);
    cfg.precision = precision;
    let mut t = Trainer::new(cfg).unwrap();
    let m = t.train_step(&[synthetic_batch(5, 0, 4, 64)]).unwrap();
    (m.loss, m.grad_norm)
}

#[test]
fn bf16_step_matches_f32_to_bf16_accuracy_and_restores_precision() {
    let _guard = PRECISION_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let (l32, g32) = one_step(MatmulPrecision::F32);
    let (l16, g16) = one_step(MatmulPrecision::Bf16);
    assert_eq!(matmul_precision(), MatmulPrecision::F32, "the step must restore the precision");
    // Same model, data and masks: only the products' rounding differs (8-bit mantissas).
    let (dl, dg) = ((l16 - l32).abs() / l32, (g16 - g32).abs() / g32);
    eprintln!("loss f32 {l32:.6} bf16 {l16:.6} ({dl:.2e}); grad norm f32 {g32:.6} bf16 {g16:.6} ({dg:.2e})");
    assert!(dl < 2e-2 && dg < 5e-2, "bf16 step too far from f32: loss {dl:.3e}, grad norm {dg:.3e}");
    assert!(l16 != l32, "bf16 autocast changed nothing: is it wired to the GEMMs?");
}

#[test]
fn bf16_autocast_run_learns() {
    // The learn.rs run in bf16: the masked loss must fall as it does in f32.
    let _guard = PRECISION_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let steps = 80;
    let mut cfg = tiny_train(steps, 3e-2);
    cfg.model.decoder_width = 128;
    cfg.warmup_steps = 5;
    cfg.precision = MatmulPrecision::Bf16;
    let mut t = Trainer::new(cfg).unwrap();
    let mut losses = Vec::new();
    t.run(&mut source(3, 0, 8, 64), &AtomicBool::new(false), &mut |m| losses.push(m.loss)).unwrap();
    let avg = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    let (start, end) = (avg(&losses[..10]), avg(&losses[steps - 10..]));
    eprintln!("bf16 masked loss: first 10 steps {start:.4}, last 10 steps {end:.4}");
    assert!(start > 0.9 && end < 0.6 * start, "bf16 loss fell only from {start} to {end}");
}

#[test]
fn precision_is_saved_in_the_run_config_and_defaults_to_f32() {
    let mut cfg = tiny_train(4, 2e-3);
    cfg.precision = MatmulPrecision::Bf16;
    let json = serde_json::to_value(&cfg).unwrap();
    assert_eq!(json["precision"], "bf16");
    let back: spark::TrainConfig = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back.precision, MatmulPrecision::Bf16);
    // A checkpoint written before the key existed ran in f32.
    let mut old = json.clone();
    old.as_object_mut().unwrap().remove("precision");
    assert_eq!(serde_json::from_value::<spark::TrainConfig>(old).unwrap().precision, MatmulPrecision::F32);
    let mut bad = json;
    bad["precision"] = "fp8".into();
    let e = serde_json::from_value::<spark::TrainConfig>(bad).unwrap_err().to_string();
    assert!(e.contains("fp8"), "{e}");
}

#[test]
fn bf16_autocast_of_an_f64_model_is_a_clear_error() {
    let mut cfg = tiny_train(4, 2e-3);
    cfg.precision = MatmulPrecision::Bf16;
    cfg.model.dtype = "f64".into();
    let e = Trainer::new(cfg).err().expect("f64 + bf16 must be refused").to_string();
    assert!(e.contains("bf16") && e.contains("f64"), "{e}");
}

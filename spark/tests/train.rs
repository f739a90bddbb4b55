//! Training loop: exact resume, NaN handling, stop flag, gradient accumulation, encoder export,
//! reconstruction picture.

mod common;

use common::*;
use spark::checkpoint;
use spark::mask::PatchMask;
use spark::recon;
use spark::{EncoderMode, StopReason, Trainer};
use spark_engine::Rng;
use spark_nn::{build_backbone, load_safetensors, BackboneConfig, Module};
use std::sync::atomic::{AtomicBool, Ordering};

fn losses(t: &mut Trainer, data: &mut dyn spark::BatchSource, stop_at: Option<usize>) -> (Vec<f64>, StopReason) {
    let stop = AtomicBool::new(false);
    let mut v = Vec::new();
    let r = t
        .run(data, &stop, &mut |m| {
            v.push(m.loss);
            if Some(m.step) == stop_at {
                stop.store(true, Ordering::SeqCst);
            }
        })
        .unwrap();
    (v, r)
}

#[test]
fn resume_continues_the_loss_curve_exactly() {
    let dir = temp_dir("resume");
    let mut cfg = tiny_train(6, 2e-3);
    cfg.model.drop_path = 0.1; // exercise the RNG state through drop-path too
    let mut a = Trainer::new(cfg.clone()).unwrap();
    let (full, r) = losses(&mut a, &mut source(1, 0, 4, 64), None);
    assert_eq!(r, StopReason::Finished);
    assert_eq!(full.len(), 6);

    cfg.checkpoint_dir = Some(dir.clone());
    cfg.checkpoint_every = 2;
    let mut b = Trainer::new(cfg).unwrap();
    let (first, r) = losses(&mut b, &mut source(1, 0, 4, 64), Some(3));
    assert_eq!(r, StopReason::Stopped); // the stop flag saves, then returns
    assert_eq!(first.len(), 3);
    let ckpt = dir.join("last.safetensors");
    let mut c = Trainer::resume(&ckpt).unwrap();
    assert_eq!(c.step, 3);
    let (rest, r) = losses(&mut c, &mut source(1, 3, 4, 64), None);
    assert_eq!(r, StopReason::Finished);
    let resumed: Vec<f64> = first.into_iter().chain(rest).collect();
    for (i, (x, y)) in full.iter().zip(&resumed).enumerate() {
        assert!((x - y).abs() <= 1e-6 * x.abs(), "step {}: {x} vs {y}", i + 1);
    }
    // The final states agree too.
    let pa = a.model.named_parameters();
    let pc = c.model.named_parameters();
    for ((n, x), (_, y)) in pa.iter().zip(&pc) {
        assert_eq!(x.to_vec_f64().unwrap(), y.to_vec_f64().unwrap(), "{n}");
    }
    let (meta, _, _) = checkpoint::read(&ckpt).unwrap();
    assert_eq!(meta.step, 6);
    assert_eq!(meta.config.model, spark::SparkConfig { drop_path: 0.1, ..tiny_model(64) });
}

#[test]
fn non_finite_loss_stops_and_keeps_the_last_good_checkpoint() {
    let dir = temp_dir("nan");
    let mut cfg = tiny_train(10, 2e-3);
    cfg.checkpoint_dir = Some(dir.clone());
    cfg.checkpoint_every = 1;
    let mut t = Trainer::new(cfg).unwrap();
    let mut n = 0;
    let mut data = std::iter::from_fn(move || {
        n += 1;
        let x = synthetic_batch(2, n, 4, 64);
        Some(Ok(if n == 3 { x.mul_scalar(f64::NAN).unwrap() } else { x }))
    });
    let stop = AtomicBool::new(false);
    let err = t.run(&mut data, &stop, &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("non-finite loss") && err.contains("step 3"), "{err}");
    assert!(err.contains("last.safetensors"), "{err}");
    assert_eq!(t.step, 2);
    let r = Trainer::resume(&dir.join("last.safetensors")).unwrap();
    assert_eq!(r.step, 2);
    for (_, p) in r.model.named_parameters() {
        assert!(p.to_vec_f64().unwrap().iter().all(|v| v.is_finite()));
    }
}

#[test]
fn gradient_accumulation_takes_one_optimizer_step_per_group() {
    // With accumulation the loss of each micro-batch is divided by their number; the reported
    // loss is the micro-batch mean and the optimizer takes one step.
    let mut cfg = tiny_train(4, 2e-3);
    cfg.accum_steps = 2;
    let mut t = Trainer::new(cfg).unwrap();
    let (l, _) = losses(&mut t, &mut source(3, 0, 2, 64), None);
    assert_eq!(l.len(), 4);
    assert_eq!(t.optimizer.moments().step, 4);
    assert!(l.iter().all(|v| v.is_finite()));
}

#[test]
fn exported_encoder_loads_into_the_nn_backbone() {
    let dir = temp_dir("export");
    let t = Trainer::new(tiny_train(1, 1e-3)).unwrap();
    let path = dir.join("encoder.safetensors");
    checkpoint::export_encoder(&t.model, &path).unwrap();
    let cfg = BackboneConfig {
        num_classes: 0,
        width_mult: 0.25,
        depths: Some(vec![1, 1, 1, 1]),
        ..BackboneConfig::headless()
    };
    let bb = build_backbone("resnet18", &cfg, &mut Rng::new(99)).unwrap();
    let report = load_safetensors(bb.as_ref(), &path, true).unwrap();
    assert!(report.is_clean(), "{report:?}");
    let (names, _) = spark::st_io::load(&path).unwrap();
    assert!(names.iter().all(|(n, _)| !n.starts_with("sparse_encoder") && !n.contains("mask_token")));
    assert!(names.iter().any(|(n, _)| n == "conv1.weight"));
    let a = bb.named_parameters();
    let b = t.model.encoder.named_parameters();
    for ((n, x), (_, y)) in a.iter().zip(&b) {
        assert_eq!(x.to_vec_f64().unwrap(), y.to_vec_f64().unwrap(), "{n}");
    }
}

#[test]
fn reconstruction_picture_composites_visible_patches() {
    let dir = temp_dir("recon");
    let mut t = Trainer::new(tiny_train(1, 1e-3)).unwrap();
    t.model.eval();
    let x = synthetic_batch(4, 0, 2, 64);
    let mask = PatchMask::from_active(2, 2, 2, vec![true, false, false, true, false, true, true, false]).unwrap();
    let r = recon::reconstruct(&t.model, &x, &mask, EncoderMode::Sparse, &mut Rng::new(0)).unwrap();
    let (o, c, m) =
        (r.original.to_vec_f64().unwrap(), r.composite.to_vec_f64().unwrap(), r.masked.to_vec_f64().unwrap());
    let vis = mask.upsample(64, 64).unwrap();
    for b in 0..2 {
        for ch in 0..3 {
            for p in 0..64 * 64 {
                let i = (b * 3 + ch) * 4096 + p;
                if vis[b * 4096 + p] {
                    assert_eq!(c[i], o[i]);
                    assert_eq!(m[i], o[i]);
                } else {
                    assert_eq!(m[i], 0.0);
                }
            }
        }
    }
    let path = dir.join("recon.png");
    recon::save_reconstruction_png(&t.model, &x, &mask, EncoderMode::Sparse, &mut Rng::new(0), &path).unwrap();
    let img = image::open(&path).unwrap().to_rgb8();
    assert_eq!((img.width(), img.height()), (3 * 64 + 4, 2 * 64 + 2));
}

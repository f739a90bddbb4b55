//! The smoke version of `scripts/fashion-mnist-experiment.sh` (docs/experiments.md): SparK
//! pretraining on Fashion-MNIST, then fine-tuning and linear probes, through the real binary.
//! It asserts only what must hold at any budget: the pretraining loss falls, and fine-tuned
//! and probed accuracies are well above chance (10 classes: 10%).
//!
//! Needs the Debian package `dataset-fashion-mnist` (CI installs it). Without it the test says
//! so and passes, except under CI (`CI` set), where missing data is a failure.

use std::path::{Path, PathBuf};
use std::process::Command;

const DATA_DIR: &str = "/usr/share/datasets/fashion-mnist";

fn top1(log: &Path) -> f64 {
    let text = std::fs::read_to_string(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    let line = text.lines().rev().find(|l| l.starts_with("top-1:")).unwrap_or_else(|| panic!("no top-1 in {text}"));
    line.split_whitespace().nth(1).unwrap().trim_end_matches('%').parse().unwrap()
}

fn losses(metrics: &Path) -> Vec<f64> {
    std::fs::read_to_string(metrics)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64().unwrap())
        .collect()
}

#[test]
fn pretraining_helps_smoke() {
    if !Path::new(DATA_DIR).join("train-images-idx3-ubyte.gz").exists() {
        assert!(std::env::var_os("CI").is_none(), "CI must install dataset-fashion-mnist ({DATA_DIR} is missing)");
        eprintln!("skipped: Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)");
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::env::temp_dir().join(format!("spark-fmnist-smoke-{}", std::process::id()));
    let run = Command::new("bash")
        .arg(root.join("scripts/fashion-mnist-experiment.sh"))
        .env("SPARK", env!("CARGO_BIN_EXE_spark"))
        .env("BUDGET", "smoke")
        .env("ARCHS", "r18")
        .env("SEEDS", "0")
        .env("OUT", &out)
        .output()
        .unwrap();
    let say = String::from_utf8_lossy(&run.stdout).to_string() + &String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "the smoke experiment failed:\n{say}");

    // 60 pretraining steps (in 2 segments, one log): the masked-patch loss falls.
    let l = losses(&out.join("pretrain-r18/metrics.jsonl"));
    assert_eq!(l.len(), 60, "{say}");
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (first, last) = (mean(&l[..10]), mean(&l[50..]));
    assert!(last < first, "pretraining loss did not fall: first 10 steps {first:.4}, last 10 {last:.4}");
    assert!(out.join("recon-r18-step60.png").exists());

    for name in ["ft-r18-pretrained-frac0.1-seed0", "ft-r18-scratch-frac0.1-seed0", "probe-r18-pretrained-seed0"] {
        let acc = top1(&out.join("log").join(format!("{name}.txt")));
        assert!(acc > 20.0, "{name}: test top-1 {acc}% is not well above chance (10%)\n{say}");
    }
    assert!(std::fs::read_to_string(out.join("results.md")).unwrap().contains("| r18 fine-tune, pretrained, 0.1"));
    let _ = std::fs::remove_dir_all(&out);
}

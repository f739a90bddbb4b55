//! End-to-end tests of the real `spark` binary on tiny settings: every workflow command, the
//! files it writes, resume continuity, and the error contract (one line + hint, exit codes).

use image::{Rgb, RgbImage};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_spark");

struct Tmp(PathBuf);
impl Tmp {
    fn new(tag: &str) -> Tmp {
        let p = std::env::temp_dir().join(format!("spark-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }
    fn join(&self, s: &str) -> PathBuf {
        self.0.join(s)
    }
}
impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Three classes of 6 small images each: red / green / blue-ish gradients with noise.
fn class_folders(root: &Path) {
    for (c, name) in ["apple", "leaf", "sky"].iter().enumerate() {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..6u32 {
            let img = RgbImage::from_fn(48, 40, |x, y| {
                let v = ((x * 5 + y * 3 + i * 17) % 64) as u8;
                let mut p = [v, v, v];
                p[c] = 160 + v;
                Rgb(p)
            });
            img.save(dir.join(format!("{i}.png"))).unwrap();
        }
    }
}

fn spark(args: &[&str], cwd: &Path) -> Output {
    Command::new(BIN).args(args).current_dir(cwd).output().expect("run spark")
}

/// Runs `spark args` in `cwd` and asserts that it fails with `code`, its stderr holding every
/// needle, with no panic or backtrace; returns the stderr.
fn fails(cwd: &Path, args: &[&str], code: i32, needles: &[&str]) -> String {
    let o = spark(args, cwd);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: {err}");
    }
    assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "{args:?}: {err}");
    err
}

fn ok(o: &Output) -> String {
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "spark failed ({:?}):\nstdout:\n{out}\nstderr:\n{err}", o.status.code());
    format!("{out}{err}")
}

const TINY: &[&str] = &[
    "--backbone",
    "resnet18",
    "--width-mult",
    "0.125",
    "--input-size",
    "64",
    "--decoder-width",
    "32",
    "--batch-size",
    "4",
    "--workers",
    "1",
];

fn pretrain(t: &Tmp, out: &str, steps: &str, extra: &[&str]) -> String {
    let data = t.join("data");
    let mut args = vec!["pretrain", "--data", data.to_str().unwrap(), "--out", out, "--steps", steps];
    args.extend_from_slice(TINY);
    args.extend_from_slice(extra);
    ok(&spark(&args, &t.0))
}

fn losses(path: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap())
        })
        .collect()
}

#[test]
fn pretrain_writes_its_files_and_resume_continues_the_curve_exactly() {
    let t = Tmp::new("pretrain");
    class_folders(&t.join("data"));
    let log = pretrain(&t, "full", "4", &[]);
    assert!(log.contains("image folders") && log.contains("18 images, 3 classes"), "{log}");
    for f in ["last.safetensors", "config.toml", "metrics.jsonl", "loss.svg", "reconstruction.png"] {
        assert!(t.join("full").join(f).exists(), "missing {f}");
    }
    let full = losses(&t.join("full/metrics.jsonl"));
    assert_eq!(full.iter().map(|x| x.0).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    let cfg = std::fs::read_to_string(t.join("full/config.toml")).unwrap();
    assert!(cfg.contains("steps = 4") && cfg.contains("width_mult = 0.125"), "{cfg}");
    let svg = std::fs::read_to_string(t.join("full/loss.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("<polyline"));
    // Reconstruction grid: 3 columns of 64 px plus gaps.
    let png = image::open(t.join("full/reconstruction.png")).unwrap();
    assert_eq!(png.width(), 3 * 64 + 4 * 4);

    // Stop after 2 of 4 steps, then resume: the same four losses as the uninterrupted run.
    let log = pretrain(&t, "split", "4", &["--stop-at", "2"]);
    assert!(log.contains("stopped at step 2 of 4"), "{log}");
    let log = ok(&spark(&["pretrain", "--resume", "--out", "split", "--steps", "4"], &t.0));
    assert!(log.contains("steps 2..4"), "{log}");
    let split = losses(&t.join("split/metrics.jsonl"));
    assert_eq!(split.len(), 4);
    for (a, b) in full.iter().zip(&split) {
        assert_eq!(a.0, b.0);
        assert!((a.1 - b.1).abs() < 1e-5, "step {}: {} vs {} after resume", a.0, a.1, b.1);
    }
}

#[test]
fn reconstruct_export_extract_finetune_eval_predict() {
    let t = Tmp::new("workflow");
    class_folders(&t.join("data"));
    pretrain(&t, "pre", "2", &[]);
    let ck = "pre/last.safetensors";

    let o = ok(&spark(&["reconstruct", "-c", ck, "--data", "data", "-n", "3", "-o", "rec.png"], &t.0));
    assert!(o.contains("wrote rec.png"), "{o}");
    let png = image::open(t.join("rec.png")).unwrap();
    assert_eq!(png.height(), 3 * (64 + 4) + 4);

    let o = ok(&spark(&["export", "-c", ck, "-o", "enc.safetensors"], &t.0));
    assert!(o.contains("wrote enc.safetensors"), "{o}");
    let bytes = std::fs::read(t.join("enc.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let names: Vec<String> = st.names().into_iter().cloned().collect();
    assert!(names.contains(&"conv1.weight".to_string()) && names.contains(&"layer4.1.bn2.running_var".to_string()));
    assert!(!names.iter().any(|n| n.contains("decoder") || n.contains("mask_token") || n.starts_with("fc.")));
    assert_eq!(st.tensor("bn1.num_batches_tracked").unwrap().dtype(), safetensors::Dtype::I64);

    let o = ok(&spark(&["extract", "-c", "enc.safetensors", "--data", "data", "-o", "f.safetensors"], &t.0));
    assert!(o.contains("features.3: [18, 64, 2, 2]"), "{o}");
    let o = ok(&spark(&["extract", "-c", ck, "--pooled", "data/sky/0.png", "-o", "p.safetensors"], &t.0));
    assert!(o.contains("pooled: [1, 64]"), "{o}");

    let o = ok(&spark(
        &[
            "finetune",
            "--init",
            "enc.safetensors",
            "--data",
            "data",
            "--val-data",
            "data",
            "--steps",
            "5",
            "--batch-size",
            "6",
            "--workers",
            "1",
            "--out",
            "ft",
            "--precision",
            "bf16",
        ],
        &t.0,
    ));
    assert!(o.contains("from pretrained weights") && o.contains("val top-1"), "{o}");
    assert!(o.contains("bf16 products"), "{o}");
    for f in ["classifier.safetensors", "metrics.jsonl", "loss.svg"] {
        assert!(t.join("ft").join(f).exists(), "missing {f}");
    }
    let o =
        ok(&spark(&["eval", "-c", "ft/classifier.safetensors", "--data", "data", "--confusion-csv", "cm.csv"], &t.0));
    assert!(o.contains("top-1:") && o.contains("top-5: 100.00%") && o.contains("(18 images)"), "{o}");
    // --precision is global: inference in bf16 too.
    let o = ok(&spark(&["eval", "-c", "ft/classifier.safetensors", "--data", "data", "--precision", "bf16"], &t.0));
    assert!(o.contains("top-5: 100.00%") && o.contains("(18 images)"), "{o}");
    let csv = std::fs::read_to_string(t.join("cm.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4);
    let o = ok(&spark(&["predict", "-c", "ft/classifier.safetensors", "data/leaf/1.png", "--json"], &t.0));
    let v: serde_json::Value = serde_json::from_str(o.lines().next().unwrap()).unwrap();
    assert_eq!(v["pred_scores"].as_array().unwrap().len(), 3);
    let s: f64 = v["pred_scores"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).sum();
    assert!((s - 1.0).abs() < 1e-4);
    // The classifier is not a pretraining checkpoint: a clear error.
    let o = spark(&["export", "-c", "ft/classifier.safetensors"], &t.0);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn config_file_is_merged_under_flags() {
    let t = Tmp::new("config");
    class_folders(&t.join("data"));
    std::fs::write(t.join("c.toml"), "steps = 1\nmask_ratio = 0.5\nseed = 9\n").unwrap();
    pretrain(&t, "run", "2", &["--config", "c.toml"]);
    let cfg = std::fs::read_to_string(t.join("run/config.toml")).unwrap();
    // --steps 2 (flag) beats the file's 1; the file's mask ratio and seed beat the preset.
    assert!(cfg.contains("steps = 2") && cfg.contains("mask_ratio = 0.5") && cfg.contains("seed = 9"), "{cfg}");
    // bf16 autocast from a flag: saved in the run config and announced in the log.
    let log = pretrain(&t, "bf16", "1", &["--precision", "bf16"]);
    assert!(log.contains("precision: bf16 autocast"), "{log}");
    let cfg = std::fs::read_to_string(t.join("bf16/config.toml")).unwrap();
    assert!(cfg.contains("precision = \"bf16\""), "{cfg}");
    std::fs::write(t.join("bad.toml"), "stepz = 1\n").unwrap();
    let o = spark(&["pretrain", "--config", "bad.toml"], &t.0);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.toml") && err.contains("stepz"), "{err}");
}

#[test]
fn errors_are_one_line_with_a_hint_and_exit_codes_differ() {
    let t = Tmp::new("errors");
    let check = |args: &[&str], code: i32, needle: &str| fails(&t.0, args, code, &[needle]);
    check(&["pretrain", "--no-such-flag"], 2, "--no-such-flag");
    check(&["pretrain", "--input-size", "50"], 2, "multiple of 32");
    check(&["pretrain", "--backbone", "vgg16"], 2, "unknown backbone");
    check(&["pretrain", "--precision", "fp8"], 2, "use f32 or bf16");
    check(&["bench", "step", "--precision", "fp8"], 2, "use f32 or bf16");
    check(&["finetune", "--precision", "fp8"], 2, "use f32 or bf16");
    check(&["bench", "step", "--optimizer", "sgd"], 2, "use lamb or adamw");
    check(&["eval", "-c", "x.safetensors", "--precision", "fp8"], 2, "use f32 or bf16");
    let e = check(&["pretrain", "--data", "missing-folder", "--out", "o"], 1, "does not exist");
    assert!(e.lines().count() == 2 && e.contains("hint:"), "{e}");
    let e = check(&["pretrain", "--device", "cuda", "--out", "o"], 1, "CUDA");
    assert!(e.contains("hint:") && e.contains("--device cpu"), "{e}");
    check(&["pretrain", "--device", "tpu"], 2, "unknown device");
    // Commands that compute nothing on a device say so instead of ignoring --device.
    check(&["info", "--device", "cuda"], 2, "does not apply");
    check(&["export", "--device", "cuda:1", "-c", "x.safetensors", "-o", "y.safetensors"], 2, "does not apply");
    if spark_engine::cuda::cuda_missing_reason().is_some() {
        // No GPU here: the commands that run on CUDA say so with the engine's reason.
        for cmd in [
            &["finetune", "--device", "cuda", "--out", "o"][..],
            &["eval", "--device", "cuda:1", "-c", "x.safetensors"],
        ] {
            let e = check(cmd, 1, "cannot use CUDA device");
            assert!(e.contains("hint:") && e.contains("--device cpu"), "{e}");
        }
    }
    std::fs::create_dir_all(t.join("empty")).unwrap();
    check(&["pretrain", "--data", "empty", "--out", "o"], 1, "contains no images");
    check(&["eval", "-c", "nope.safetensors"], 2, "does not exist");
    let o = spark(&["--help"], &t.0);
    assert_eq!(o.status.code(), Some(0));
    let help = String::from_utf8_lossy(&o.stdout);
    for c in ["pretrain", "finetune", "eval", "predict", "extract", "reconstruct", "bench", "info", "export"] {
        assert!(help.contains(c), "{c} missing from --help");
    }
}

#[test]
fn info_and_bench_print_their_tables() {
    let t = Tmp::new("info");
    let o = ok(&spark(&["info", "--preset", "official"], &t.0));
    // SPARK.md: ResNet-50 official pretraining model 52,921,835 parameters; 7x7 grid keeps 20.
    assert!(o.contains("52921835"), "{o}");
    assert!(o.contains("20 visible, 29 masked"), "{o}");
    assert!(o.contains("[256, 512, 1024, 2048]"), "{o}");
    let o = ok(&spark(&["bench", "gemm", "--sizes", "64,128", "--reps", "1"], &t.0));
    assert!(o.contains("| 128 |") && o.contains("best / naive"), "{o}");
    assert!(o.contains("dense 3x3 convs: Winograd"), "{o}");
    let o = ok(&spark(&["bench", "gemm", "--sizes", "64", "--reps", "1", "--no-winograd"], &t.0));
    assert!(o.contains("dense 3x3 convs: implicit GEMM"), "{o}");
    let o = ok(&spark(&["bench", "gemm", "--sizes", "64", "--reps", "1", "--precision", "bf16"], &t.0));
    assert!(o.contains("matmul precision: bf16"), "{o}");
}

#[cfg(unix)]
#[test]
fn ctrl_c_saves_a_checkpoint_that_resumes() {
    let t = Tmp::new("sigint");
    class_folders(&t.join("data"));
    let data = t.join("data");
    let mut args = vec!["pretrain", "--data", data.to_str().unwrap(), "--out", "run", "--steps", "100000"];
    args.extend_from_slice(TINY);
    let child = Command::new(BIN).args(&args).current_dir(&t.0).stderr(std::process::Stdio::piped()).spawn().unwrap();
    // Wait until a few steps are logged, then send SIGINT.
    let metrics = t.join("run/metrics.jsonl");
    for _ in 0..600 {
        if std::fs::read_to_string(&metrics).map(|s| s.lines().count() >= 2).unwrap_or(false) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let st = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(st.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted at step") && err.contains("--resume"), "{err}");
    assert!(t.join("run/last.safetensors").exists());
    // The saved state resumes (here: to a short total, so the test ends quickly).
    let steps = std::fs::read_to_string(&metrics).unwrap().lines().count();
    let o = spark(&["pretrain", "--resume", "--out", "run", "--steps", &(steps + 1).to_string()], &t.0);
    let log = ok(&o);
    assert!(log.contains(&format!("steps {steps}..{}", steps + 1)), "{log}");
}

/// Spawns a tiny pretraining run in `t` with stdout and stderr piped.
#[cfg(unix)]
fn spawn_pretrain(t: &Tmp, out: &str, steps: &str) -> std::process::Child {
    spawn_pretrain_with(t, out, steps, &[])
}

/// `spark info | head -1` and `spark pretrain ... 2>&1 | head -1`: output to a closed pipe is
/// dropped; nothing panics or aborts and training saves as usual.
#[cfg(unix)]
#[test]
fn closed_pipes_neither_panic_nor_stop_training() {
    use std::io::BufRead;
    let t = Tmp::new("pipe");
    class_folders(&t.join("data"));
    // `spark info --preset official | head -0`: stdout closed before the first line.
    let mut c = Command::new(BIN)
        .args(["info", "--preset", "official"])
        .current_dir(&t.0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(c.stdout.take());
    let o = c.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked") && !err.contains("internal error"), "{err}");

    // `spark pretrain ... 2>&1 | head -1`: one line read, then both pipes closed.
    let mut c = spawn_pretrain(&t, "run", "6");
    drop(c.stdout.take());
    let mut first = String::new();
    std::io::BufReader::new(c.stderr.take().unwrap()).read_line(&mut first).unwrap();
    assert!(first.starts_with("spark pretrain:"), "{first}");
    let status = c.wait().unwrap();
    assert_eq!(status.code(), Some(0), "training stopped on a closed pipe");
    assert_eq!(losses(&t.join("run/metrics.jsonl")).len(), 6);
    // The checkpoint is complete: it loads.
    let o = ok(&spark(&["export", "-c", "run/last.safetensors", "-o", "enc.safetensors"], &t.0));
    assert!(o.contains("from step 6"), "{o}");
}

/// SIGTERM (job schedulers) and SIGHUP (terminal closed) act like the first Ctrl-C: the run
/// saves a loadable checkpoint and exits with 128 + the signal number.
#[cfg(unix)]
#[test]
fn sigterm_and_sighup_save_a_checkpoint() {
    let t = Tmp::new("sigterm");
    class_folders(&t.join("data"));
    for (sig, code) in [("TERM", 143), ("HUP", 129)] {
        let out = format!("run-{sig}");
        let mut c = spawn_pretrain(&t, &out, "100000");
        drop(c.stdout.take());
        let metrics = t.join(&out).join("metrics.jsonl");
        for _ in 0..600 {
            if std::fs::read_to_string(&metrics).map(|s| s.lines().count() >= 2).unwrap_or(false) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let st = Command::new("kill").args([&format!("-{sig}"), &c.id().to_string()]).status().unwrap();
        assert!(st.success());
        let o = c.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "SIG{sig}: {err}");
        assert!(err.contains("interrupted at step") && err.contains(&format!("SIG{sig}")), "{err}");
        assert!(err.contains("--resume"), "{err}");
        let ck = format!("{out}/last.safetensors");
        let o = ok(&spark(&["export", "-c", &ck, "-o", &format!("{out}/enc.safetensors")], &t.0));
        assert!(o.contains("wrote"), "{o}");
    }
}

/// A run folder that holds a run is never replaced silently, a failed start writes nothing, an
/// output that is also an input is refused, and a failed save leaves no `.tmp`.
#[test]
fn no_silent_overwrite_of_runs_or_inputs() {
    let t = Tmp::new("overwrite");
    class_folders(&t.join("data"));
    let read = |p: &str| std::fs::read(t.join(p)).unwrap();
    let check = |args: &[&str], code: i32, needles: &[&str]| {
        fails(&t.0, args, code, needles);
    };
    pretrain(&t, "base", "1", &[]);
    let (ck, cfg) = (read("base/last.safetensors"), read("base/config.toml"));
    let data = t.join("data");
    let data = data.to_str().unwrap();
    let mut again = vec!["pretrain", "--data", data, "--out", "base", "--steps", "2"];
    again.extend_from_slice(TINY);
    // spark pretrain --data data --out base --steps 2 ...: refused, nothing touched.
    check(&again, 2, &["base already holds a run", "--resume", "--overwrite"]);
    assert_eq!(read("base/last.safetensors"), ck);
    assert_eq!(read("base/config.toml"), cfg);
    // spark pretrain --data /nonexistent --out base --overwrite: fails before writing anything.
    check(&["pretrain", "--data", "/nonexistent", "--out", "base", "--overwrite"], 1, &["does not exist"]);
    assert_eq!(read("base/config.toml"), cfg);
    check(&["pretrain", "--data", "/nonexistent", "--out", "fresh"], 1, &["does not exist"]);
    assert!(!t.join("fresh").exists());
    // Resuming another run's checkpoint into base would replace base's run.
    std::fs::create_dir_all(t.join("other")).unwrap();
    for f in ["last.safetensors", "config.toml"] {
        std::fs::copy(t.join("base").join(f), t.join("other").join(f)).unwrap();
    }
    check(
        &["pretrain", "--resume", "other/last.safetensors", "--out", "base", "--steps", "2"],
        2,
        &["already holds another run"],
    );
    assert_eq!(read("base/last.safetensors"), ck);
    // --resume of its own checkpoint and --overwrite both proceed.
    ok(&spark(&["pretrain", "--resume", "--out", "base", "--steps", "2"], &t.0));
    again.push("--overwrite");
    let log = ok(&spark(&again, &t.0));
    assert!(log.contains("steps 0..2"), "{log}");
    assert_eq!(losses(&t.join("base/metrics.jsonl")).len(), 2);

    // An output equal to an input is an error naming the path; the input survives.
    let x = "base/last.safetensors";
    let ck = read(x);
    check(&["export", "-c", x, "-o", x], 2, &[x, "destroy the input"]);
    check(&["extract", "-c", x, "-o", "base/./last.safetensors"], 2, &["base/./last.safetensors", "destroy"]);
    check(&["eval", "-c", x, "--confusion-csv", x], 2, &[x, "--confusion-csv"]);
    check(&["reconstruct", "-c", x, "-o", x], 2, &[x, "destroy"]);
    assert_eq!(read(x), ck);

    // A save that fails (here: the target is a non-empty folder) removes its temporary file.
    std::fs::create_dir_all(t.join("blocked/last.safetensors/keep")).unwrap();
    let mut blocked = vec!["pretrain", "--data", data, "--out", "blocked", "--steps", "1", "--overwrite"];
    blocked.extend_from_slice(TINY);
    check(&blocked, 1, &["last.safetensors"]);
    assert!(!t.join("blocked/last.safetensors.tmp").exists());
    std::fs::create_dir_all(t.join("enc.safetensors/keep")).unwrap();
    check(&["export", "-c", x, "-o", "enc.safetensors"], 1, &["cannot write enc.safetensors"]);
    assert!(!t.join("enc.safetensors.tmp").exists());
}

#[test]
fn models_and_info_name_speak_mmpretrain() {
    let t = Tmp::new("zoo");
    let o = ok(&spark(&["models"], &t.0));
    for needle in [
        "spark_sparse-resnet50_800e_in1k",
        "spark_sparse-convnextv2-tiny_800e_in1k",
        "resnet50_spark-pre_300e_in1k",
        "convnextv2-tiny_spark-pre_300e_in1k",
        "spark_sparse-resnet50_8xb512-amp-coslr-800e_in1k",
        "convnextv2-tiny_8xb256-coslr-300e_in1k",
        // SPARK.md 8.3: 37,970,611 / 39,729,619 / 28,635,496 parameters; top-1 80.10 / 82.80.
        "37.97M",
        "39.73M",
        "28.64M",
        "25.56M",
        "80.10",
        "82.80",
    ] {
        assert!(o.contains(needle), "{needle}: {o}");
    }
    let o = ok(&spark(&["info", "spark_sparse-resnet50_800e_in1k"], &t.0));
    assert!(o.contains("37970611") && o.contains("37.97M"), "{o}");
    assert!(o.contains("[256, 512, 1024, 2048]") && o.contains("spark_sparse-resnet50_8xb512"), "{o}");
    let o = ok(&spark(&["info", "convnextv2-tiny_spark-pre_300e_in1k"], &t.0));
    assert!(o.contains("28635496") && o.contains("82.80 / 96.30"), "{o}");
    assert!(o.contains("4.47"), "{o}");
    // The flag form still works; a name and a preset do not mix; an unknown name lists the valid ones.
    let o = ok(&spark(&["info", "--preset", "mmpretrain"], &t.0));
    assert!(o.contains("preset mmpretrain"), "{o}");
    let o = spark(&["info", "resnet50_spark-pre_300e_in1k", "--preset", "official"], &t.0);
    assert_eq!(o.status.code(), Some(2));
    let o = spark(&["info", "resnet5"], &t.0);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("unknown model name 'resnet5'") && err.contains("spark_sparse-resnet50_800e_in1k"), "{err}");
}

/// Every numeric setting is checked against its range when the command line and config are
/// parsed: exit 2, naming the flag (or config key) and the allowed range, before anything runs.
#[test]
fn numeric_settings_are_checked_against_their_ranges() {
    let t = Tmp::new("ranges");
    let check = |args: &[&str], needles: &[&str]| {
        let err = fails(&t.0, args, 2, needles);
        assert!(!err.contains("integer -1"), "{args:?}: {err}");
    };
    // Flags, with and without `=` for negative values.
    check(&["pretrain", "--lr=-1"], &["--lr -1", "must be > 0"]);
    check(&["pretrain", "--lr", "-1"], &["--lr -1", "must be > 0"]);
    check(&["pretrain", "--lr", "0"], &["--lr 0", "must be > 0"]);
    check(&["pretrain", "--mask-ratio", "0"], &["--mask-ratio 0", "(0, 1)"]);
    check(&["pretrain", "--mask-ratio", "-0.5"], &["--mask-ratio -0.5", "(0, 1)"]);
    check(&["pretrain", "--mask-ratio", "1"], &["--mask-ratio 1", "(0, 1)"]);
    check(&["pretrain", "--mask-ratio", "0.95"], &["--mask-ratio 0.95", "masks all 9 patches"]);
    check(&["pretrain", "--width-mult", "0"], &["--width-mult 0", "> 0"]);
    check(&["pretrain", "--decoder-width", "16"], &["--decoder-width 16", ">= 32"]);
    check(&["pretrain", "--batch-size", "0"], &["--batch-size 0", ">= 2"]);
    check(&["pretrain", "--steps", "0"], &["--steps 0", ">= 1"]);
    check(&["pretrain", "--epochs", "0"], &["--epochs 0", ">= 1"]);
    check(&["pretrain", "--threads", "0"], &["--threads 0", "must be in [1, "]);
    check(&["pretrain", "--threads", "100000"], &["--threads 100000", "must be in [1, ", "cores"]);
    check(&["finetune", "--threads", "100000"], &["--threads 100000", "must be in [1, "]);
    check(&["pretrain", "--workers", "100000"], &["--workers 100000", "must be in [0, "]);
    // u64 seeds beyond what a TOML integer holds: a clear error, not "integer -1".
    check(&["pretrain", "--seed", "18446744073709551615"], &["--seed 18446744073709551615", "9223372036854775807"]);
    check(&["pretrain", "--steps", "18446744073709551615"], &["--steps 18446744073709551615"]);
    // Sizes whose one step cannot fit in memory: refused before allocating, naming the flag.
    check(
        &["pretrain", "--input-size", "100000"],
        &["--input-size 100000", "needs too much memory", "this machine has"],
    );
    check(&["pretrain", "--decoder-width", "100000"], &["--decoder-width 100000", "needs too much memory"]);
    check(&["pretrain", "--batch-size", "100000000"], &["--batch-size 100000000", "needs too much memory"]);
    check(&["finetune", "--input-size", "100000"], &["--input-size 100000", "needs too much memory"]);
    // The same ranges for settings from a TOML config (named by their key when no flag sets them).
    for (toml, needles) in [
        ("lr = -5.0", &["--lr -5", "must be > 0", "config"][..]),
        ("beta1 = 1.0", &["`beta1` 1", "[0, 1)"]),
        ("beta2 = 2.0", &["`beta2` 2", "[0, 1)"]),
        ("max_grad_norm = -1.0", &["`max_grad_norm` -1", "> 0"]),
        ("max_grad_norm = 0.0", &["`max_grad_norm` 0", "> 0"]),
        ("wd = -0.1", &["`wd` -0.1", ">= 0"]),
        ("mask_ratio = 0.0", &["--mask-ratio 0", "(0, 1)"]),
        ("crop_scale = [0.5, 0.2]", &["`crop_scale`", "0 < a <= b <= 1"]),
        ("batch_size = 0", &["--batch-size 0", ">= 2"]),
    ] {
        std::fs::write(t.join("c.toml"), toml).unwrap();
        check(&["pretrain", "--config", "c.toml", "--out", "never"], needles);
    }
    assert!(!t.join("never").exists(), "a refused run wrote its folder");
    // Fine-tuning flags.
    check(&["finetune", "--lr=-1"], &["--lr -1", "must be > 0"]);
    check(&["finetune", "--lr", "-1"], &["--lr -1", "must be > 0"]);
    check(&["finetune", "--weight-decay", "-1"], &["--weight-decay -1", ">= 0"]);
    check(&["finetune", "--label-smoothing", "1"], &["--label-smoothing 1", "[0, 1)"]);
    check(&["finetune", "--layer-decay", "0"], &["--layer-decay 0", "(0, 1]"]);
    check(&["finetune", "--warmup-frac", "2"], &["--warmup-frac 2", "[0, 1]"]);
    check(&["finetune", "--drop-path", "1"], &["--drop-path 1", "[0, 1)"]);
    check(&["finetune", "--batch-size", "0"], &["--batch-size 0", ">= 2"]);
    check(&["finetune", "--steps", "0"], &["--steps 0", ">= 1"]);
    check(&["finetune", "--input-size", "50"], &["--input-size 50", "multiple of 32"]);
    assert!(!t.join("runs").exists(), "a refused run wrote its folder");
}

/// Writes `tensors` (name, dtype, shape, bytes) and `metadata` as a safetensors file.
fn write_st(
    path: &Path,
    tensors: &[(String, safetensors::Dtype, Vec<usize>, Vec<u8>)],
    md: &std::collections::HashMap<String, String>,
) {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(path, safetensors::tensor::serialize(views, &Some(md.clone())).unwrap()).unwrap();
}

/// A checkpoint whose optimizer keys do not match its model (renamed, missing, reshaped or
/// foreign keys) or that is truncated fails to resume with an error naming the key (or the
/// file), never a panic.
#[test]
fn damaged_checkpoint_keys_are_errors_naming_the_key() {
    let t = Tmp::new("resumekeys");
    class_folders(&t.join("data"));
    pretrain(&t, "run", "1", &[]);
    let ck = t.join("run/last.safetensors");
    let original = std::fs::read(&ck).unwrap();
    let st = safetensors::SafeTensors::deserialize(&original).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&original).unwrap();
    let md = meta.metadata().clone().unwrap();
    let mut tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> =
        st.tensors().into_iter().map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec())).collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    // A parameter with a 4-d weight and both moments: the first conv of the encoder.
    let v_key = tensors
        .iter()
        .map(|x| &x.0)
        .find(|n| n.starts_with("optim.v.") && n.ends_with("conv1.weight"))
        .expect("a conv1 moment")
        .clone();
    let name = v_key.strip_prefix("optim.v.").unwrap().to_string();
    let m_key = format!("optim.m.{name}");
    let rename = |from: &str, to: &str| {
        tensors
            .iter()
            .cloned()
            .map(|mut x| {
                if x.0 == from {
                    x.0 = to.to_string();
                }
                x
            })
            .collect::<Vec<_>>()
    };
    let mut cases: Vec<(&str, Vec<_>, String)> = vec![
        ("v renamed", rename(&v_key, "optim.v.renamed.weight"), v_key.clone()),
        ("m renamed", rename(&m_key, "optim.m.renamed.weight"), "optim.m.renamed.weight".into()),
        ("v dropped", tensors.iter().filter(|x| x.0 != v_key).cloned().collect(), v_key.clone()),
        (
            "foreign key",
            tensors
                .iter()
                .cloned()
                .chain(
                    tensors
                        .iter()
                        .filter(|x| x.0 == v_key)
                        .map(|x| (format!("optim.q.{name}"), x.1, x.2.clone(), x.3.clone())),
                )
                .collect(),
            format!("optim.q.{name}"),
        ),
        ("model renamed", rename(&format!("model.{name}"), "model.renamed.weight"), format!("model.{name}")),
    ];
    let mut reshaped = tensors.clone();
    let x = reshaped.iter_mut().find(|x| x.0 == v_key).unwrap();
    x.2 = vec![x.2.iter().product()];
    cases.push(("v reshaped", reshaped, v_key.clone()));
    for (what, ts, key) in cases {
        write_st(&ck, &ts, &md);
        let err = fails(&t.0, &["pretrain", "--resume", "--out", "run", "--steps", "2"], 1, &[&key]);
        assert!(!err.contains("internal error"), "{what}: {err}");
    }
    // A truncated checkpoint: said so, with the path, instead of the parser's error name.
    std::fs::write(&ck, &original[..original.len() / 2]).unwrap();
    let err = fails(
        &t.0,
        &["pretrain", "--resume", "--out", "run", "--steps", "2"],
        1,
        &["run/last.safetensors: the file is truncated or not a safetensors checkpoint"],
    );
    assert!(!err.contains("MetadataIncompleteBuffer") && !err.contains("InvalidOffset"), "{err}");
    std::fs::write(t.join("junk.safetensors"), b"abc").unwrap();
    let o = spark(&["export", "-c", "junk.safetensors", "-o", "enc.safetensors"], &t.0);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("junk.safetensors: the file is truncated or not a safetensors checkpoint"), "{err}");
    assert!(!err.contains("MetadataIncompleteBuffer"), "{err}");
    // The intact checkpoint still resumes.
    std::fs::write(&ck, &original).unwrap();
    ok(&spark(&["pretrain", "--resume", "--out", "run", "--steps", "2"], &t.0));
}

/// A tiny from-scratch fine-tuning run's arguments (data in `data`, output in `out`).
fn finetune_args<'a>(out: &'a str, steps: &'a str) -> Vec<&'a str> {
    vec![
        "finetune",
        "--data",
        "data",
        "--out",
        out,
        "--steps",
        steps,
        "--width-mult",
        "0.125",
        "--input-size",
        "64",
        "--batch-size",
        "4",
        "--workers",
        "1",
    ]
}

/// `finetune --out` refuses a folder that holds a fine-tuning run unless `--overwrite`, and a
/// failed start (bad data or --init) writes nothing.
#[test]
fn finetune_refuses_to_overwrite_a_run() {
    let t = Tmp::new("ft-overwrite");
    class_folders(&t.join("data"));
    let read = |p: &str| std::fs::read(t.join(p)).unwrap();
    let check = |args: &[&str], code: i32, needles: &[&str]| {
        fails(&t.0, args, code, needles);
    };
    ok(&spark(&finetune_args("ft", "1"), &t.0));
    let (cl, me) = (read("ft/classifier.safetensors"), read("ft/metrics.jsonl"));
    // The same command again: refused, nothing touched.
    check(&finetune_args("ft", "2"), 2, &["ft already holds a fine-tuning run", "--overwrite"]);
    assert_eq!(read("ft/classifier.safetensors"), cl);
    assert_eq!(read("ft/metrics.jsonl"), me);
    // A folder with only a metrics log counts as a run too.
    std::fs::create_dir_all(t.join("half")).unwrap();
    std::fs::write(t.join("half/metrics.jsonl"), "x\n").unwrap();
    check(&finetune_args("half", "1"), 2, &["half/metrics.jsonl"]);
    assert_eq!(read("half/metrics.jsonl"), b"x\n");
    // Bad inputs fail before anything is written, with or without --overwrite.
    check(&["finetune", "--data", "/nonexistent", "--out", "ft", "--overwrite"], 1, &["does not exist"]);
    assert_eq!(read("ft/metrics.jsonl"), me);
    check(&["finetune", "--data", "/nonexistent", "--out", "fresh"], 1, &["does not exist"]);
    let mut bad_init = finetune_args("fresh", "1");
    bad_init.extend_from_slice(&["--init", "missing.safetensors"]);
    check(&bad_init, 2, &["missing.safetensors"]);
    check(&["finetune", "--data", "data", "--out", "fresh", "--lr", "0"], 2, &["--lr 0"]);
    assert!(!t.join("fresh").exists());
    // --overwrite replaces the run.
    let mut again = finetune_args("ft", "2");
    again.push("--overwrite");
    ok(&spark(&again, &t.0));
    assert_eq!(losses(&t.join("ft/metrics.jsonl")).len(), 2);
    assert_ne!(read("ft/classifier.safetensors"), cl);
}

/// SIGTERM stops a fine-tuning run after the current step: it saves a classifier that `eval`
/// loads and exits with 143.
#[cfg(unix)]
#[test]
fn finetune_sigterm_saves_the_classifier() {
    let t = Tmp::new("ft-sigterm");
    class_folders(&t.join("data"));
    let mut c = Command::new(BIN)
        // Far more steps than the test waits for (a step takes milliseconds).
        .args(finetune_args("ft", "2000"))
        .current_dir(&t.0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(c.stdout.take());
    let metrics = t.join("ft/metrics.jsonl");
    for _ in 0..600 {
        if std::fs::read_to_string(&metrics).map(|s| s.lines().count() >= 2).unwrap_or(false) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let st = Command::new("kill").args(["-TERM", &c.id().to_string()]).status().unwrap();
    assert!(st.success());
    let o = c.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(143), "{err}");
    assert!(err.contains("interrupted at step") && err.contains("SIGTERM"), "{err}");
    assert!(err.contains("ft/classifier.safetensors"), "{err}");
    assert!(!t.join("ft/classifier.safetensors.tmp").exists());
    assert!(t.join("ft/loss.svg").exists());
    let o = ok(&spark(&["eval", "-c", "ft/classifier.safetensors", "--data", "data"], &t.0));
    assert!(o.contains("top-1:") && o.contains("(18 images)"), "{o}");
}

/// Spawns `spark pretrain` into `out` with `extra` flags, stdout and stderr piped.
#[cfg(unix)]
fn spawn_pretrain_with(t: &Tmp, out: &str, steps: &str, extra: &[&str]) -> std::process::Child {
    let data = t.join("data");
    let mut args = vec!["pretrain", "--data", data.to_str().unwrap(), "--out", out, "--steps", steps];
    args.extend_from_slice(TINY);
    args.extend_from_slice(extra);
    Command::new(BIN)
        .args(&args)
        .current_dir(&t.0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until `metrics` holds at least `n` lines (a run has started training).
fn wait_for_lines(metrics: &Path, n: usize) {
    for _ in 0..1200 {
        if std::fs::read_to_string(metrics).map(|s| s.lines().count() >= n).unwrap_or(false) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("{} never reached {n} lines", metrics.display());
}

/// Two runs on one `--out`: the second fails at once with an error naming the folder, writes
/// nothing, and the first goes on. The lock dies with its process, even on `kill -9`.
#[cfg(unix)]
#[test]
fn a_run_folder_is_locked_while_a_run_uses_it() {
    let t = Tmp::new("lock");
    class_folders(&t.join("data"));
    let mut first = spawn_pretrain_with(&t, "cc", "100000", &["--save-every", "2"]);
    let metrics = t.join("cc/metrics.jsonl");
    wait_for_lines(&metrics, 2);
    let data = t.join("data");
    let data = data.to_str().unwrap();
    // spark pretrain --out cc --overwrite / --resume while the first run is in it.
    let mut second = vec!["pretrain", "--data", data, "--out", "cc", "--steps", "100000", "--overwrite"];
    second.extend_from_slice(TINY);
    let cfg = std::fs::read(t.join("cc/config.toml")).unwrap();
    fails(&t.0, &second, 1, &["cc is in use by another run", "cc/.lock", "another `spark` process"]);
    // --resume needs the first run's checkpoint (written every 2 steps) to get as far as the lock.
    wait_for_lines(&metrics, 4);
    while !t.join("cc/last.safetensors").exists() {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    fails(&t.0, &["pretrain", "--resume", "--out", "cc", "--steps", "100000"], 1, &["cc is in use by another run"]);
    assert_eq!(std::fs::read(t.join("cc/config.toml")).unwrap(), cfg, "the refused run wrote config.toml");
    // The first run kept going: its log grows and holds one row per step.
    let n = std::fs::read_to_string(&metrics).unwrap().lines().count();
    wait_for_lines(&metrics, n + 2);
    // kill -9: the OS drops the lock, so the folder can be used again at once.
    first.kill().unwrap();
    first.wait().unwrap();
    let steps: Vec<u64> = losses(&metrics).iter().map(|x| x.0).collect();
    assert_eq!(steps, (0..steps.len() as u64).collect::<Vec<_>>(), "two runs wrote into one log");
    second[6] = "2";
    let log = ok(&spark(&second, &t.0));
    assert!(log.contains("steps 0..2"), "{log}");
}

/// `--stop-at 10` then `--resume`: the first 10 rows of metrics.jsonl are kept byte for byte.
#[test]
fn resume_appends_to_the_metrics_log_without_rewriting_it() {
    let t = Tmp::new("append");
    class_folders(&t.join("data"));
    pretrain(&t, "run", "12", &["--stop-at", "10"]);
    let path = t.join("run/metrics.jsonl");
    let before = std::fs::read(&path).unwrap();
    assert_eq!(before.iter().filter(|&&b| b == b'\n').count(), 10);
    ok(&spark(&["pretrain", "--resume", "--out", "run", "--steps", "12"], &t.0));
    let after = std::fs::read(&path).unwrap();
    assert!(after.starts_with(&before), "rows 0-9 were rewritten on resume");
    assert_eq!(losses(&path).iter().map(|x| x.0).collect::<Vec<_>>(), (0..12).collect::<Vec<_>>());
}

/// A zero-byte `.jpg` among readable images at `--batch-size 2`: the batches it falls in are
/// refilled from other images, so the run neither stops nor loses its bit-exact resume.
#[test]
fn an_unreadable_image_does_not_stop_a_batch_of_two() {
    let t = Tmp::new("badimg");
    class_folders(&t.join("data"));
    std::fs::write(t.join("data/apple/empty.jpg"), b"").unwrap();
    // TINY at --batch-size 2 (TINY's own 4 replaced: clap takes a flag once).
    let data = t.join("data");
    let run = |out: &str, extra: &[&str]| {
        let mut args = vec!["pretrain", "--data", data.to_str().unwrap(), "--out", out, "--steps", "12"];
        args.extend(TINY.iter().map(|&a| if a == "4" { "2" } else { a }));
        args.extend_from_slice(extra);
        ok(&spark(&args, &t.0))
    };
    // 19 images at batch 2: 10 steps are an epoch, so the empty file is met.
    let log = run("full", &[]);
    assert!(log.contains("skipped unreadable image") && log.contains("empty.jpg"), "{log}");
    assert!(log.contains("at batch 2"), "{log}");
    run("split", &["--stop-at", "6"]);
    ok(&spark(&["pretrain", "--resume", "--out", "split", "--steps", "12"], &t.0));
    let (full, split) = (losses(&t.join("full/metrics.jsonl")), losses(&t.join("split/metrics.jsonl")));
    assert_eq!(full.len(), 12);
    assert_eq!(full, split, "the resumed run saw other batches");
}

/// `self -> .` and `up -> ..` in `--data`: skipped and counted; every image counts once.
#[cfg(unix)]
#[test]
fn symlink_loops_in_data_folders_are_skipped() {
    use std::os::unix::fs::symlink;
    let t = Tmp::new("symlinks");
    class_folders(&t.join("data"));
    symlink(".", t.join("data/self")).unwrap();
    symlink("..", t.join("data/apple/up")).unwrap();
    let log = pretrain(&t, "run", "1", &[]);
    assert!(log.contains("18 images, 3 classes"), "{log}");
    assert!(log.contains("skipped 2 symbolic link(s)"), "{log}");
}

/// The bytes of an IDX u8 file with `dims` and `data`.
fn idx_file(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// An IDX file with no images, or with images of 0x0 pixels, is refused naming the file.
#[test]
fn idx_files_without_images_are_refused() {
    let t = Tmp::new("idx0");
    std::fs::write(t.join("none-images-idx3-ubyte"), idx_file(&[0, 28, 28], &[])).unwrap();
    std::fs::write(t.join("zero-images-idx3-ubyte"), idx_file(&[4, 0, 0], &[])).unwrap();
    for f in ["none-images-idx3-ubyte", "zero-images-idx3-ubyte"] {
        fails(&t.0, &["pretrain", "--data", f, "--out", "run"], 1, &[f, "nothing to train on"]);
    }
    assert!(!t.join("run").exists());
}

/// A checkpoint whose metadata holds an impossible model (input_size 1000000, 0 or 50) is an
/// error naming the file and the key in `reconstruct`, `extract` and `pretrain --resume`.
#[test]
fn checkpoint_metadata_is_checked_like_flags() {
    let t = Tmp::new("badmeta");
    class_folders(&t.join("data"));
    pretrain(&t, "run", "1", &[]);
    ok(&spark(&["export", "-c", "run/last.safetensors", "-o", "enc.safetensors"], &t.0));
    let forge = |src: &str, dst: &str, key: &str, edit: &dyn Fn(&mut serde_json::Value)| {
        let bytes = std::fs::read(t.join(src)).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let mut md = meta.metadata().clone().unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&md[key]).unwrap();
        edit(&mut v);
        md.insert(key.to_string(), v.to_string());
        let tensors: Vec<_> =
            st.tensors().into_iter().map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec())).collect();
        write_st(&t.join(dst), &tensors, &md);
    };
    for size in [1_000_000u64, 0, 50] {
        forge("run/last.safetensors", "bad.safetensors", "config", &|v| v["model"]["input_size"] = size.into());
        forge("enc.safetensors", "bad-enc.safetensors", "model", &|v| v["input_size"] = size.into());
        let needles = ["bad.safetensors: metadata `input_size", "out of range"];
        fails(&t.0, &["reconstruct", "-c", "bad.safetensors", "--data", "data", "-o", "r.png"], 1, &needles);
        fails(&t.0, &["extract", "-c", "bad.safetensors", "--data", "data", "-o", "f.safetensors"], 1, &needles);
        let needles = ["bad-enc.safetensors: metadata `input_size", "out of range"];
        fails(&t.0, &["extract", "-c", "bad-enc.safetensors", "--data", "data", "-o", "f.safetensors"], 1, &needles);
    }
    // Resuming a run whose checkpoint says input_size 1000000.
    forge("bad.safetensors", "run/last.safetensors", "config", &|v| v["model"]["input_size"] = 1_000_000u64.into());
    let needles = ["run/last.safetensors: metadata `input_size", "1000000"];
    fails(&t.0, &["pretrain", "--resume", "--out", "run", "--steps", "2"], 1, &needles);
    assert!(!t.join("r.png").exists() && !t.join("f.safetensors").exists());
}

/// `--resume elsewhere/backup.safetensors` (a checkpoint without its config.toml) continues from
/// the settings the checkpoint carries; only the data must be named.
#[test]
fn a_checkpoint_copied_elsewhere_resumes_with_its_own_config() {
    let t = Tmp::new("backup");
    class_folders(&t.join("data"));
    pretrain(&t, "full", "4", &[]);
    pretrain(&t, "split", "4", &["--stop-at", "2"]);
    std::fs::create_dir_all(t.join("elsewhere")).unwrap();
    std::fs::copy(t.join("split/last.safetensors"), t.join("elsewhere/backup.safetensors")).unwrap();
    let resume = ["pretrain", "--resume", "elsewhere/backup.safetensors", "--out", "cont"];
    fails(&t.0, &resume, 2, &["elsewhere/backup.safetensors", "elsewhere/config.toml", "--data"]);
    assert!(!t.join("cont").exists());
    let log = ok(&spark(&[&resume[..], &["--data", "data"]].concat(), &t.0));
    assert!(log.contains("steps 2..4") && !log.contains("model flags are ignored"), "{log}");
    let cfg = std::fs::read_to_string(t.join("cont/config.toml")).unwrap();
    assert!(cfg.contains("width_mult = 0.125") && cfg.contains("batch_size = 4"), "{cfg}");
    // The same steps 2 and 3 as the uninterrupted run.
    assert_eq!(losses(&t.join("cont/metrics.jsonl")), losses(&t.join("full/metrics.jsonl"))[2..]);
}

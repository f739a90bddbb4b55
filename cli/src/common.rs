//! Options every compute command shares (device, threads, seed) and their set-up.

use crate::error::{CliError, CliResult};
use clap::Args;
use spark_engine::{set_matmul_precision, DType, Device, MatmulPrecision, Tensor};

#[derive(Args, Debug, Clone)]
pub struct CommonOpts {
    /// Compute device: cpu, cuda or cuda:N.
    #[arg(long, global = true)]
    pub device: Option<String>,
    /// Compute threads (default: all cores).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    /// Data-decoding threads that run ahead of the compute (default 2).
    #[arg(long, global = true)]
    pub workers: Option<usize>,
    /// Precision of the matrix products (convolutions, matmuls): f32, or bf16 autocast
    /// (operands rounded to bf16, f32 accumulation, everything else f32; about 1.7x faster
    /// products on CPUs with AVX512-BF16, the same numbers without the speed-up elsewhere).
    /// pretrain saves it in the run config (default: the config's, f32 for a new run).
    #[arg(long, global = true)]
    pub precision: Option<String>,
}

/// Parses `--precision` (None when not given).
pub fn parse_precision(spec: Option<&str>) -> CliResult<Option<MatmulPrecision>> {
    spec.map(|s| {
        MatmulPrecision::parse(s).ok_or_else(|| CliError::usage(format!("--precision '{s}': use f32 or bf16")))
    })
    .transpose()
}

/// Sets the process-wide matrix-product precision of an inference command from `--precision`.
pub fn setup_precision(common: &CommonOpts) -> CliResult<MatmulPrecision> {
    let p = parse_precision(common.precision.as_deref())?.unwrap_or_default();
    set_matmul_precision(p);
    Ok(p)
}

/// The device of a command that runs on CUDA (`finetune`, `eval`, `predict`): `cpu`, `cuda`,
/// `cuda:N`, or `auto` (the first usable GPU, else the CPU). A GPU that cannot be used (no
/// driver, no NVRTC, a bad ordinal) is the engine's typed error, never a silent fallback.
pub fn setup_compute_device(spec: &str) -> CliResult<Device> {
    let dev = Device::parse(spec).map_err(|e| CliError::usage(e.to_string()).hint("use --device cpu"))?;
    if !dev.is_cpu() {
        // Moving a one-element tensor opens the device.
        let probe = Tensor::zeros(&[1], DType::F32, Device::Cpu)?;
        if let Err(e) = probe.to_device(dev) {
            return Err(CliError::runtime(format!("cannot use CUDA device {dev}: {e}"))
                .hint("no usable NVIDIA GPU was found; run with --device cpu"));
        }
    }
    Ok(dev)
}

/// Commands that compute nothing on a device (`info`, `export`) reject `--device cuda` instead
/// of ignoring it.
pub fn no_device(command: &str, common: &CommonOpts) -> CliResult<()> {
    match common.device.as_deref().map(str::trim) {
        None | Some("cpu") | Some("auto") => Ok(()),
        Some(d) => Err(CliError::usage(format!(
            "`spark {command}` runs no computation on a device; --device {d} does not apply"
        ))
        .hint("drop --device")),
    }
}

/// The device of a command whose loop does not run on CUDA yet (`pretrain`: the sparse encoder
/// has no CUDA kernels; `extract`, `reconstruct`, `bench`): the CPU, or a clear error for a GPU.
pub fn setup_device(spec: &str) -> CliResult<Device> {
    // `auto` means the CPU here: no need to open a GPU (a CUDA context costs start-up time).
    if spec.trim() == "auto" {
        return Ok(Device::Cpu);
    }
    let dev = setup_compute_device(spec)?;
    if !dev.is_cpu() {
        return Err(CliError::runtime(format!(
            "device {dev} works, but this command does not run on CUDA yet (its sparse convolutions have no CUDA kernels)"
        ))
        .hint("run with --device cpu; finetune, eval and predict run on CUDA"));
    }
    Ok(dev)
}

/// The most threads `--threads` / `--workers` may ask for: 4x the cores (more only thrash).
pub fn max_threads() -> usize {
    4 * std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Checks a thread count flag (`--threads`, `--workers`): at least `min`, at most [`max_threads`].
pub fn check_threads(flag: &str, n: usize, min: usize) -> CliResult<()> {
    let max = max_threads();
    if n < min || n > max {
        return Err(CliError::usage(format!("{flag} {n} is out of range: must be in [{min}, {max}]"))
            .hint(format!("{max} is 4x the {} cores of this machine", max / 4)));
    }
    Ok(())
}

/// Sizes the global compute pool once (rayon, used by every kernel).
pub fn setup_threads(threads: Option<usize>) -> CliResult<()> {
    if let Some(n) = threads {
        check_threads("--threads", n, 1)?;
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .map_err(|e| CliError::runtime(format!("cannot set up {n} compute threads: {e}")))?;
    }
    Ok(())
}

/// A numeric setting outside its range: exit 2, naming the flag (or config key) and the range.
pub fn out_of_range(name: &str, value: impl std::fmt::Display, range: &str) -> CliError {
    CliError::usage(format!("{name} {value} is out of range: must be {range}"))
}

/// `Ok` when `v` is finite and inside the range `lo..hi` with the given open/closed ends.
pub fn check_f64(name: &str, v: f64, lo: f64, lo_open: bool, hi: f64, hi_open: bool) -> CliResult<()> {
    let above = if lo_open { v > lo } else { v >= lo };
    let below = if hi_open { v < hi } else { v <= hi };
    if v.is_finite() && above && below {
        return Ok(());
    }
    let range = match (lo == f64::NEG_INFINITY, hi == f64::INFINITY) {
        (false, true) => format!("{} {lo}", if lo_open { ">" } else { ">=" }),
        (true, false) => format!("{} {hi}", if hi_open { "<" } else { "<=" }),
        _ => format!("in {}{lo}, {hi}{}", if lo_open { "(" } else { "[" }, if hi_open { ")" } else { "]" }),
    };
    Err(out_of_range(name, v, &range))
}

/// Total memory of this machine in bytes (Linux `/proc/meminfo`; None elsewhere).
pub fn total_memory() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

/// Rough sizes of an encoder: (parameters at width 1, activation floats kept per input pixel
/// for the backward at width 1, dense). Lower bounds of what PyTorch-style training needs.
fn encoder_size(backbone: &str) -> (f64, f64) {
    match backbone {
        "resnet18" => (11.7e6, 150.0),
        "resnet34" => (21.8e6, 250.0),
        "resnet50" => (25.6e6, 400.0),
        "resnet101" => (44.5e6, 650.0),
        "resnet152" => (60.2e6, 900.0),
        "resnet200" => (64.7e6, 1100.0),
        b if b.ends_with("tiny") => (28.0e6, 300.0),
        b if b.ends_with("small") => (50.0e6, 550.0),
        b if b.ends_with("base") => (89.0e6, 700.0),
        _ => (198.0e6, 1000.0),
    }
}

/// What one training step needs, for [`check_step_memory`].
pub struct StepSize<'a> {
    pub backbone: &'a str,
    pub width_mult: f64,
    pub input_size: usize,
    pub batch_size: usize,
    /// Light-decoder width (0: no decoder, as in fine-tuning).
    pub decoder_width: usize,
    /// Fraction of the encoder's activations computed (1 - mask ratio for the sparse encoder).
    pub encoder_fraction: f64,
}

impl StepSize<'_> {
    /// Rough lower bound of the bytes of one training step: the activations kept for the backward
    /// plus parameters, gradients and two optimizer moments (f32).
    pub fn bytes(&self) -> (f64, f64) {
        let (params, per_px) = encoder_size(self.backbone);
        let w = self.width_mult;
        let d = self.decoder_width as f64;
        let px = (self.input_size as f64).powi(2);
        // Decoder level i (5 levels): cout = d / 2^(i+1) at (s / 2^(4-i))^2 pixels, ~7 tensors
        // of that size (upsample, two convs, two BNs, activation); sums to ~0.42 d per pixel.
        let act = self.batch_size as f64 * px * (per_px * w * self.encoder_fraction + 0.42 * d + 3.0);
        // Decoder parameters: transposed 4x4 conv + two 3x3 convs per level, ~30 d^2 in all.
        let weights = params * w * w + 30.0 * d * d;
        (4.0 * act, 16.0 * weights)
    }
}

fn human(bytes: f64) -> String {
    let gib = bytes / (1u64 << 30) as f64;
    if gib >= 1024.0 {
        format!("{:.1} TiB", gib / 1024.0)
    } else if gib >= 1.0 {
        format!("{gib:.1} GiB")
    } else {
        format!("{:.0} MiB", gib * 1024.0)
    }
}

/// Refuses a step that cannot fit in this machine's memory, naming the flag that makes it big.
pub fn check_step_memory(s: &StepSize) -> CliResult<()> {
    let Some(total) = total_memory() else { return Ok(()) };
    let (act, weights) = s.bytes();
    if act + weights <= total {
        return Ok(());
    }
    // The culprit: the flag furthest above the quick defaults (batch 16, 96 px, decoder 128,
    // width x0.25), weighted by how the memory grows with it.
    let mut grow = vec![
        ("--batch-size", s.batch_size.to_string(), s.batch_size as f64 / 16.0),
        ("--input-size", s.input_size.to_string(), (s.input_size as f64 / 96.0).powi(2)),
        ("--width-mult", s.width_mult.to_string(), (s.width_mult / 0.25).powi(2)),
    ];
    if s.decoder_width > 0 {
        grow.push(("--decoder-width", s.decoder_width.to_string(), (s.decoder_width as f64 / 128.0).powi(2)));
    }
    grow.sort_by(|a, b| b.2.total_cmp(&a.2));
    let (flag, value, _) = &grow[0];
    let all: Vec<String> = grow.iter().map(|(f, v, _)| format!("{f} {v}")).collect();
    Err(CliError::usage(format!(
        "{flag} {value} needs too much memory: one training step needs at least {} ({} activations, {} weights and optimizer state; {}), this machine has {}",
        human(act + weights),
        human(act),
        human(weights),
        all.join(", "),
        human(total)
    ))
    .hint(format!("lower {flag}")))
}

pub fn compute_threads() -> usize {
    rayon::current_num_threads()
}

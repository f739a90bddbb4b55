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
    let dev = setup_compute_device(spec)?;
    if !dev.is_cpu() {
        if spec.trim() == "auto" {
            return Ok(Device::Cpu);
        }
        return Err(CliError::runtime(format!(
            "device {dev} works, but this command does not run on CUDA yet (its sparse convolutions have no CUDA kernels)"
        ))
        .hint("run with --device cpu; finetune, eval and predict run on CUDA"));
    }
    Ok(dev)
}

/// Sizes the global compute pool once (rayon, used by every kernel).
pub fn setup_threads(threads: Option<usize>) -> CliResult<()> {
    if let Some(n) = threads {
        if n == 0 {
            return Err(CliError::usage("--threads must be at least 1"));
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .map_err(|e| CliError::runtime(format!("cannot set up {n} compute threads: {e}")))?;
    }
    Ok(())
}

pub fn compute_threads() -> usize {
    rayon::current_num_threads()
}

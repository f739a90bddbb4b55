//! Options every compute command shares (device, threads, seed) and their set-up.

use crate::error::{CliError, CliResult};
use clap::Args;
use spark_engine::{DType, Device, Tensor};

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
}

/// Parses the device and checks it can be used: on this build only the CPU exists, and asking
/// for CUDA is a clear error instead of a silent fallback.
pub fn setup_device(spec: &str) -> CliResult<Device> {
    let dev = Device::parse(spec).map_err(|e| CliError::usage(e.to_string()).hint("use --device cpu"))?;
    if !dev.is_cpu() {
        // Moving a one-element tensor asks the engine whether a backend for `dev` exists.
        let probe = Tensor::zeros(&[1], DType::F32, Device::Cpu)?;
        if let Err(e) = probe.to_device(dev) {
            return Err(CliError::runtime(format!("cannot use device {dev}: {e}"))
                .hint("this build has no CUDA backend or no GPU is visible; run with --device cpu"));
        }
        return Err(CliError::runtime(format!("device {dev} is not supported by the training loop of this build"))
            .hint("run with --device cpu"));
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

//! Launch geometry shared by the kernel wrappers, and the `launch!` macro.

use crate::{Error, Result};
use cudarc::driver::LaunchConfig;

/// Threads per block of every elementwise, row and reduction kernel (their `.cu` files assume it).
pub const BLOCK: u32 = 256;
/// Blocks of a grid-stride launch are capped here; the kernels loop over the rest.
const MAX_GRID: usize = 65535;

/// Grid-stride elementwise launch over `n` items.
pub(crate) fn elementwise(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(BLOCK as usize).clamp(1, MAX_GRID) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
}

/// One block per row (kernels loop over rows when there are more than the grid).
pub(crate) fn per_row(rows: usize) -> LaunchConfig {
    let blocks = rows.clamp(1, MAX_GRID) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
}

/// A size as the kernels' `int`, or an error naming the op when it does not fit.
pub(crate) fn int(n: usize, op: &'static str) -> Result<i32> {
    i32::try_from(n).map_err(|_| Error::Msg(format!("{op}: size {n} exceeds the CUDA kernels' 32-bit index range")))
}

/// `launch!(dev, SOURCE, "kernel", cfg, &arg1, &mut arg2, ...)`: looks the kernel up (compiling
/// its source on first use) and queues it on the device's stream. `...; ints` appends every
/// element of the array `ints` as one more argument each (the geometry of convs and pools).
macro_rules! launch {
    ($dev:expr, $src:expr, $name:literal, $cfg:expr, $($arg:expr),* $(; $ints:expr)? $(,)?) => {{
        let dev: &$crate::cuda::CudaDevice = &$dev;
        let f = dev.function(&$src, $name)?;
        let mut b = dev.stream().launch_builder(&f);
        #[allow(unused_imports)]
        use cudarc::driver::PushKernelArg as _;
        $( b.arg($arg); )*
        $( for v in $ints.iter() { b.arg(v); } )?
        // SAFETY: each wrapper passes the argument list of the kernel's signature in its `.cu`
        // file, with buffers at least as long as the sizes it passes.
        unsafe { b.launch($cfg) }.map_err(|e| dev.driver_err(concat!("kernel ", $name), e))?;
    }};
}
pub(crate) use launch;

//! Keeps freed memory in the process instead of handing it back to the kernel.
//!
//! glibc returns large freed blocks (mmap'd or trimmed) to the kernel, so every op whose output
//! or scratch buffer is large page-faults fresh zeroed pages on each call; `../shared/peers/RESULTS.md`
//! measured this costing PyTorch up to 3x on single layers. A training step allocates the same
//! sizes every iteration, so keeping them is the right trade for a training process. The `spark`
//! binary calls this first thing; the timing examples call it too, so that what they measure is
//! what the binary runs.

#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn keep_freed_memory() {
    extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
    }
    const M_TRIM_THRESHOLD: i32 = -1;
    const M_MMAP_MAX: i32 = -4;
    // SAFETY: mallopt only changes allocator tuning parameters; callers call it before starting
    // threads.
    unsafe {
        mallopt(M_MMAP_MAX, 0);
        mallopt(M_TRIM_THRESHOLD, i32::MAX);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn keep_freed_memory() {}

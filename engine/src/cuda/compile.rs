//! NVRTC compilation of the kernel sources, with a disk cache.
//!
//! The sources are CUDA C files under `kernels/`, embedded in the binary. They are compiled on
//! first use for the device's architecture and the PTX is kept in
//! `$SPARK_KERNEL_CACHE` (default `$XDG_CACHE_HOME/spark-rs/kernels` or `~/.cache/spark-rs/kernels`)
//! under a hash of the source, the options, NVRTC's version and the architecture, so a second
//! run skips NVRTC. A failed compile names the source file and shows NVRTC's log.

use crate::{Error, Result};
use std::path::PathBuf;

/// One kernel family: a `.cu` file compiled as one module.
#[derive(Debug)]
pub struct KernelSource {
    pub name: &'static str,
    pub src: &'static str,
}

macro_rules! kernel_source {
    ($name:literal) => {
        KernelSource { name: $name, src: include_str!(concat!("kernels/", $name, ".cu")) }
    };
}

pub static ELEMENTWISE: KernelSource = kernel_source!("elementwise");
pub static REDUCE: KernelSource = kernel_source!("reduce");
pub static SOFTMAX: KernelSource = kernel_source!("softmax");
pub static INDEX: KernelSource = kernel_source!("index");
pub static OPTIM: KernelSource = kernel_source!("optim");
pub static GEMM_F32: KernelSource = kernel_source!("gemm_f32");
pub static GEMM_BF16: KernelSource = kernel_source!("gemm_bf16");
pub static CONV: KernelSource = kernel_source!("conv");
pub static POOL: KernelSource = kernel_source!("pool");
pub static NORM: KernelSource = kernel_source!("norm");

/// Every kernel source of the engine (the compile check walks this list).
pub static ALL_SOURCES: [&KernelSource; 10] =
    [&ELEMENTWISE, &REDUCE, &SOFTMAX, &INDEX, &OPTIM, &GEMM_F32, &GEMM_BF16, &CONV, &POOL, &NORM];

/// NVRTC options besides the architecture. `scripts/cuda-compile-check.py` uses the same.
pub const NVRTC_OPTIONS: [&str; 2] = ["--std=c++17", "--fmad=true"];

/// Whether libnvrtc can be loaded (without calling into it).
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to dlopen the library by its usual names.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// NVRTC's (major, minor) version.
pub fn nvrtc_version() -> Result<(i32, i32)> {
    if !nvrtc_present() {
        return Err(Error::Msg("NVRTC (libnvrtc.so.13) is not on the library path".into()));
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: libnvrtc is loaded; the call writes two ints.
    let rc = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    if rc != cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(Error::Msg(format!("nvrtcVersion failed: {rc:?}")));
    }
    Ok((major, minor))
}

/// Compiles `source` to PTX for `arch` (`compute_90`, ...). Needs libnvrtc, not a GPU.
pub fn compile_ptx(source: &KernelSource, arch: &str) -> Result<String> {
    if !nvrtc_present() {
        return Err(Error::Msg("NVRTC (libnvrtc.so.13) is not on the library path".into()));
    }
    let mut options: Vec<String> = NVRTC_OPTIONS.iter().map(|s| s.to_string()).collect();
    options.push(format!("--gpu-architecture={arch}"));
    let opts =
        cudarc::nvrtc::CompileOptions { options, name: Some(format!("{}.cu", source.name)), ..Default::default() };
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(source.src, opts).map_err(|e| match e {
        cudarc::nvrtc::CompileError::CompileError { log, .. } => Error::Msg(format!(
            "NVRTC failed to compile kernel source {}.cu for {arch}:\n{}",
            source.name,
            log.to_string_lossy()
        )),
        e => Error::Msg(format!("NVRTC failed on kernel source {}.cu for {arch}: {e:?}", source.name)),
    })?;
    Ok(ptx.to_src())
}

/// `compile_ptx` through the disk cache. A cache that cannot be read or written is skipped.
pub fn ptx_cached(source: &KernelSource, arch: &str) -> Result<String> {
    let version = nvrtc_version()?;
    let key = cache_key(source, arch, version);
    let path = cache_dir().map(|d| d.join(format!("{}-{key:016x}.ptx", source.name)));
    if let Some(p) = &path {
        if let Ok(ptx) = std::fs::read_to_string(p) {
            return Ok(ptx);
        }
    }
    let ptx = compile_ptx(source, arch)?;
    if let Some(p) = &path {
        write_atomically(p, &ptx);
    }
    Ok(ptx)
}

/// FNV-1a over everything that changes the PTX (stable across Rust versions, unlike `Hash`).
pub fn cache_key(source: &KernelSource, arch: &str, nvrtc: (i32, i32)) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes.iter().chain([0xffu8].iter()) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(source.src.as_bytes());
    for o in NVRTC_OPTIONS {
        eat(o.as_bytes());
    }
    eat(arch.as_bytes());
    eat(format!("{}.{}", nvrtc.0, nvrtc.1).as_bytes());
    h
}

fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("SPARK_KERNEL_CACHE") {
        return Some(PathBuf::from(d));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("spark-rs").join("kernels"))
}

fn write_atomically(path: &std::path::Path, text: &str) {
    let Some(dir) = path.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let tmp =
        dir.join(format!(".{}.{}.tmp", path.file_name().unwrap_or_default().to_string_lossy(), std::process::id()));
    if std::fs::write(&tmp, text).is_ok() && std::fs::rename(&tmp, path).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

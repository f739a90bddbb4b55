//! One CUDA device: its context, its one stream, its compiled kernels and its memory counters.
//!
//! Opening a device checks, in order, that libcuda and libnvrtc can be loaded, that the ordinal
//! exists, and only then touches cudarc (whose `CudaContext::new` panics without libcuda). Every
//! failure is `Error::DeviceUnavailable` with one line that says what is missing.

use super::compile::{self, KernelSource};
use crate::{Device, Error, Result};
use cudarc::driver::{result as drv, sys, CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DeviceRepr};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

pub struct CudaDevice {
    ordinal: usize,
    name: String,
    /// (major, minor) compute capability; kernels are compiled for `compute_{major}{minor}`.
    capability: (i32, i32),
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    functions: Mutex<HashMap<(&'static str, &'static str), CudaFunction>>,
    pub(crate) memory: MemoryCounters,
}

/// Bytes held by live device buffers of this process (the driver's pool may cache more).
#[derive(Default)]
pub(crate) struct MemoryCounters {
    current: AtomicUsize,
    peak: AtomicUsize,
}

impl MemoryCounters {
    pub(crate) fn add(&self, bytes: usize) {
        let now = self.current.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }
    pub(crate) fn sub(&self, bytes: usize) {
        self.current.fetch_sub(bytes, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaDevice(cuda:{} {}, sm_{}{})", self.ordinal, self.name, self.capability.0, self.capability.1)
    }
}

fn unavailable(ordinal: usize, msg: impl Into<String>) -> Error {
    Error::DeviceUnavailable { device: Device::Cuda(ordinal), msg: msg.into() }
}

/// Why CUDA cannot be used on this machine, or `None` when the driver and NVRTC both load.
/// Touches no CUDA function, so it is safe to call anywhere.
pub fn cuda_missing_reason() -> Option<String> {
    // SAFETY: both only try to dlopen the library by its usual names.
    if !unsafe { sys::is_culib_present() } {
        return Some("the NVIDIA driver library (libcuda.so.1) is not installed on this machine".into());
    }
    if !compile::nvrtc_present() {
        return Some("NVRTC (libnvrtc.so.13, CUDA 13) is not on the library path; kernels cannot be compiled".into());
    }
    None
}

/// Number of CUDA devices, or the reason there are none.
pub fn device_count() -> Result<usize> {
    if let Some(why) = cuda_missing_reason() {
        return Err(unavailable(0, why));
    }
    // libcuda is present (checked above); cuInit is idempotent.
    drv::init().map_err(|e| unavailable(0, format!("cuInit failed: {e:?}")))?;
    let n = CudaContext::device_count().map_err(|e| unavailable(0, format!("cannot count devices: {e:?}")))?;
    Ok(n.max(0) as usize)
}

/// The device `cuda:ordinal`, opened once per process and shared.
pub fn device(ordinal: usize) -> Result<Arc<CudaDevice>> {
    static OPEN: OnceLock<Mutex<HashMap<usize, Arc<CudaDevice>>>> = OnceLock::new();
    let mut open = OPEN.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(d) = open.get(&ordinal) {
        return Ok(d.clone());
    }
    let count = device_count().map_err(|e| match e {
        Error::DeviceUnavailable { msg, .. } => unavailable(ordinal, msg),
        e => e,
    })?;
    if ordinal >= count {
        return Err(unavailable(ordinal, format!("no such device: this machine has {count} CUDA device(s)")));
    }
    let d = Arc::new(CudaDevice::open(ordinal)?);
    open.insert(ordinal, d.clone());
    Ok(d)
}

impl CudaDevice {
    fn open(ordinal: usize) -> Result<CudaDevice> {
        let err = |what: &str, e: cudarc::driver::DriverError| unavailable(ordinal, format!("{what}: {e:?}"));
        let ctx = CudaContext::new(ordinal).map_err(|e| err("cannot create a context", e))?;
        // One stream per device: every op is ordered on it, so cudarc's per-buffer events (which
        // order work across streams) are pure overhead.
        // SAFETY: no buffer exists yet, and this device only ever uses `stream`.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(|e| err("cannot create a stream", e))?;
        let capability = ctx.compute_capability().map_err(|e| err("cannot read the compute capability", e))?;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        keep_freed_memory(&ctx);
        Ok(CudaDevice {
            ordinal,
            name,
            capability,
            ctx,
            stream,
            modules: Mutex::default(),
            functions: Mutex::default(),
            memory: MemoryCounters::default(),
        })
    }

    pub fn ordinal(&self) -> usize {
        self.ordinal
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn capability(&self) -> (i32, i32) {
        self.capability
    }
    /// NVRTC's `--gpu-architecture` value for this device, e.g. `compute_90`.
    pub fn arch(&self) -> String {
        format!("compute_{}{}", self.capability.0, self.capability.1)
    }
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }
    /// Waits for every queued kernel and copy.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(|e| self.driver_err("synchronize", e))
    }
    /// (current, peak) bytes held by this process's live device buffers.
    pub fn memory_bytes(&self) -> (usize, usize) {
        (self.memory.current.load(Ordering::Relaxed), self.memory.peak.load(Ordering::Relaxed))
    }
    pub fn reset_peak_memory(&self) {
        self.memory.peak.store(self.memory.current.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    pub(crate) fn driver_err(&self, what: &str, e: cudarc::driver::DriverError) -> Error {
        Error::Msg(format!("cuda:{}: {what} failed: {e:?}", self.ordinal))
    }

    /// The kernel `name` of `source`, compiling the source on first use (NVRTC, then the disk
    /// cache) and loading it into this context once.
    pub(crate) fn function(&self, source: &'static KernelSource, name: &'static str) -> Result<CudaFunction> {
        let key = (source.name, name);
        if let Some(f) = self.functions.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(f.clone());
        }
        let module = self.module(source)?;
        let f = module
            .load_function(name)
            .map_err(|e| Error::Msg(format!("cuda kernel {name} not found in {}.cu: {e:?}", source.name)))?;
        self.functions.lock().unwrap_or_else(|e| e.into_inner()).insert(key, f.clone());
        Ok(f)
    }

    fn module(&self, source: &'static KernelSource) -> Result<Arc<CudaModule>> {
        let mut modules = self.modules.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = modules.get(source.name) {
            return Ok(m.clone());
        }
        let ptx = compile::ptx_cached(source, &self.arch())?;
        let m = self
            .ctx
            .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
            .map_err(|e| Error::Msg(format!("cuda: loading the PTX of {}.cu failed: {e:?}", source.name)))?;
        modules.insert(source.name, m.clone());
        Ok(m)
    }

    /// `n` zeros.
    pub fn alloc_zeroed(&self, n: usize) -> Result<CudaSlice<f32>> {
        let mut s = self.alloc::<f32>(n)?;
        self.fill(&mut s, 0.0, n)?;
        Ok(s)
    }

    /// `n` uninitialised elements. An out-of-memory failure releases the pool's cached blocks
    /// and tries once more before it is reported.
    pub(crate) fn alloc<T: DeviceRepr>(&self, n: usize) -> Result<CudaSlice<T>> {
        let n = n.max(1); // zero-sized allocations are not allowed by the driver
                          // SAFETY: callers write every element before reading it (each kernel's contract).
        match unsafe { self.stream.alloc::<T>(n) } {
            Ok(s) => Ok(s),
            Err(_) => {
                self.synchronize()?;
                release_cached_memory(&self.ctx);
                unsafe { self.stream.alloc::<T>(n) }.map_err(|e| {
                    let bytes = n * std::mem::size_of::<T>();
                    let (cur, _) = self.memory_bytes();
                    Error::Msg(format!(
                        "cuda:{}: out of memory allocating {bytes} bytes ({cur} bytes held by tensors): {e:?}",
                        self.ordinal
                    ))
                })
            }
        }
    }
}

/// The driver's stream-ordered pool is the caching allocator: a freed block goes back to the
/// pool and the next allocation of the stream reuses it. By default the pool returns memory to
/// the OS at every synchronisation; keeping it makes reuse the common case.
fn keep_freed_memory(ctx: &CudaContext) {
    // SAFETY: the device handle comes from a live context; the attribute takes a u64.
    unsafe {
        if let Ok(pool) = drv::device::get_default_mem_pool(ctx.cu_device()) {
            let mut threshold: u64 = u64::MAX;
            let _ = sys::cuMemPoolSetAttribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                &mut threshold as *mut u64 as *mut std::ffi::c_void,
            );
        }
    }
}

fn release_cached_memory(ctx: &CudaContext) {
    // SAFETY: as above; trimming to 0 frees every unused block of the pool.
    unsafe {
        if let Ok(pool) = drv::device::get_default_mem_pool(ctx.cu_device()) {
            let _ = drv::mem_pool::trim_to(pool, 0);
        }
    }
}

//! Backing memory of tensors: host vectors, or device memory of the CUDA backend. Ops check the
//! device first (`check_cpu`, or a CUDA branch), so `cpu()` is only reached on host storage.

use crate::cuda::CudaStorage;
use crate::{DType, Device};
use half::{bf16, f16};

#[derive(Debug, Clone)]
pub enum CpuStorage {
    F32(Vec<f32>),
    F64(Vec<f64>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
}

impl CpuStorage {
    pub fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F64(_) => DType::F64,
            CpuStorage::F16(_) => DType::F16,
            CpuStorage::BF16(_) => DType::BF16,
        }
    }
    pub fn len(&self) -> usize {
        match self {
            CpuStorage::F32(v) => v.len(),
            CpuStorage::F64(v) => v.len(),
            CpuStorage::F16(v) => v.len(),
            CpuStorage::BF16(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Raw little-endian bytes (for safetensors and checksums).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            CpuStorage::F32(v) => bytemuck::cast_slice(v),
            CpuStorage::F64(v) => bytemuck::cast_slice(v),
            CpuStorage::F16(v) => bytemuck::cast_slice(v),
            CpuStorage::BF16(v) => bytemuck::cast_slice(v),
        }
    }
}

#[derive(Debug)]
pub enum Storage {
    Cpu(CpuStorage),
    Cuda(CudaStorage),
}

const HOST_ONLY: &str = "host storage asked of a tensor on a CUDA device: the op must check the device first";

impl Storage {
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
            Storage::Cuda(s) => Device::Cuda(s.device().ordinal()),
        }
    }
    pub fn dtype(&self) -> DType {
        match self {
            Storage::Cpu(s) => s.dtype(),
            Storage::Cuda(s) => s.dtype(),
        }
    }
    /// The host storage. Callers have checked that the tensor is on the CPU.
    pub fn cpu(&self) -> &CpuStorage {
        match self {
            Storage::Cpu(s) => s,
            Storage::Cuda(_) => panic!("{HOST_ONLY}"),
        }
    }
    pub fn cpu_mut(&mut self) -> &mut CpuStorage {
        match self {
            Storage::Cpu(s) => s,
            Storage::Cuda(_) => panic!("{HOST_ONLY}"),
        }
    }
    /// The device storage, writable (in-place updates), or an error naming `op`.
    pub fn cuda_mut(&mut self, op: &'static str) -> crate::Result<&mut CudaStorage> {
        match self {
            Storage::Cuda(s) => Ok(s),
            Storage::Cpu(_) => Err(crate::Error::Msg(format!("{op}: expected a tensor on a CUDA device"))),
        }
    }
    /// The device storage, or an error naming `op` for a host tensor.
    pub fn cuda(&self, op: &'static str) -> crate::Result<&CudaStorage> {
        match self {
            Storage::Cuda(s) => Ok(s),
            Storage::Cpu(_) => Err(crate::Error::Msg(format!("{op}: expected a tensor on a CUDA device"))),
        }
    }
}

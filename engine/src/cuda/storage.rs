//! Device memory of a tensor on a CUDA device.

use super::CudaDevice;
use crate::{DType, Error, Result};
use cudarc::driver::CudaSlice;
use std::sync::Arc;

/// Elements on the GPU. f32 is what the kernels compute in; bf16 is stored as raw 16-bit values
/// (the upper half of an f32) for the tensor-core GEMM.
pub enum CudaData {
    F32(CudaSlice<f32>),
    BF16(CudaSlice<u16>),
}

pub struct CudaStorage {
    pub(crate) dev: Arc<CudaDevice>,
    pub(crate) data: CudaData,
    len: usize,
}

impl std::fmt::Debug for CudaStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaStorage(cuda:{}, {:?}, {} elements)", self.dev.ordinal(), self.dtype(), self.len)
    }
}

impl CudaStorage {
    /// Wraps a buffer of `len` elements (the buffer may be longer: allocations round up to 1).
    pub(crate) fn new(dev: Arc<CudaDevice>, data: CudaData, len: usize) -> CudaStorage {
        dev.memory.add(len * dtype_of(&data).size_in_bytes());
        CudaStorage { dev, data, len }
    }
    pub(crate) fn f32(dev: Arc<CudaDevice>, s: CudaSlice<f32>, len: usize) -> CudaStorage {
        Self::new(dev, CudaData::F32(s), len)
    }
    pub fn dtype(&self) -> DType {
        dtype_of(&self.data)
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn device(&self) -> &Arc<CudaDevice> {
        &self.dev
    }
    pub(crate) fn as_f32_mut(&mut self, op: &'static str) -> Result<&mut CudaSlice<f32>> {
        let dtype = self.dtype();
        match &mut self.data {
            CudaData::F32(s) => Ok(s),
            _ => Err(Error::UnsupportedDType { op, dtype }),
        }
    }
    pub(crate) fn as_f32(&self, op: &'static str) -> Result<&CudaSlice<f32>> {
        match &self.data {
            CudaData::F32(s) => Ok(s),
            _ => Err(Error::UnsupportedDType { op, dtype: self.dtype() }),
        }
    }
}

fn dtype_of(d: &CudaData) -> DType {
    match d {
        CudaData::F32(_) => DType::F32,
        CudaData::BF16(_) => DType::BF16,
    }
}

impl Drop for CudaStorage {
    fn drop(&mut self) {
        self.dev.memory.sub(self.len * self.dtype().size_in_bytes());
    }
}

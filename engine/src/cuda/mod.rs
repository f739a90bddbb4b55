//! The CUDA backend: kernels written here in CUDA C (`kernels/*.cu`), compiled at run time by
//! NVRTC through cudarc, and launched on one stream per device.
//!
//! cudarc loads libcuda and libnvrtc dynamically, so this module is in every build: a machine
//! without a GPU gets `Error::DeviceUnavailable` from [`device`] and runs the CPU as before.
//!
//! Layout: `device.rs` (context, stream, kernel cache, allocation), `compile.rs` (NVRTC and the
//! disk cache), `storage.rs` (a tensor's device memory), `launch.rs` (launch geometry) and one
//! wrapper file per kernel family beside its `.cu` file.

mod autocast;
pub mod compile;
pub(crate) mod conv;
mod device;
mod elementwise;
mod gemm;
mod index;
mod launch;
pub(crate) mod norm;
mod optim;
pub(crate) mod pool;
mod reduce;
pub(crate) mod softmax;
mod storage;

pub use device::{cuda_missing_reason, device, device_count, CudaDevice};
pub use elementwise::{Bcast, Binary, Strided, Unary, MAX_DIMS};
pub use gemm::GemmShape;
pub use optim::{fused_adam_update, AdamKind, AdamStep};
pub use storage::{CudaData, CudaStorage};
pub(crate) mod ops;
pub(crate) mod tensor;
#[cfg(test)]
mod tests;

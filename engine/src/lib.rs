//! spark-engine: tensors, reverse-mode autograd, CPU kernels and a CUDA backend (`cuda`).
//!
//! Layering: this crate knows nothing of sparse convolution or models. Other crates extend it
//! through the public `Op` trait (custom differentiable ops) and the `cpu::gemm` entry point.

pub mod autograd;
pub mod cpu;
pub mod cuda;
mod device;
mod dtype;
mod error;
pub mod layout;
mod ops;
mod precision;
pub mod profile;
mod rng;
pub mod storage;
mod tensor;
pub mod testing;

pub use autograd::{is_grad_enabled, no_grad, GradStore, NoGradGuard, Op};
pub use cpu::gemm::bf16_native;
pub use device::Device;
pub use dtype::{as_f32, as_f32_mut, DType, Float};
pub use error::{shape_err, Error, Result};
pub use layout::Layout;
pub use ops::{erf, Conv2dParams, ConvTranspose2dParams};
pub use precision::{matmul_precision, set_matmul_precision, MatmulPrecision, PrecisionScope};
pub use rng::Rng;
pub use storage::{CpuStorage, Storage};
pub use tensor::{Tensor, TensorId};

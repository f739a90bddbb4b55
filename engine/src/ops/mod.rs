//! Tensor operations. One family per file; each op keeps its shape checks and its backward
//! formula together, and calls kernels from `cpu/` for the work.

pub(crate) mod binary;
mod concat;
pub mod conv;
pub mod dropout;
pub mod index;
mod matmul;
pub mod norm;
pub mod pool;
mod reduce;
pub mod softmax;
pub(crate) mod unary;
pub mod upsample;
mod view;

pub use conv::{Conv2dParams, ConvTranspose2dParams};
pub use unary::erf;

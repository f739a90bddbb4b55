//! Tensor operations. One family per file; each op keeps its shape checks and its backward
//! formula together, and calls kernels from `cpu/` for the work.

pub(crate) mod binary;
mod concat;
mod matmul;
mod reduce;
pub(crate) mod unary;
mod view;

pub use unary::erf;

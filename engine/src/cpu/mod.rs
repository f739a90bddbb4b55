//! CPU kernels. Ops in `ops/` check shapes and dispatch here for CPU storage.

pub mod conv;
pub mod conv_dw;
pub mod conv_implicit;
pub mod conv_transpose;
pub mod conv_winograd;
pub mod gemm;
pub(crate) mod isa;
pub mod malloc;
pub mod partials;
pub mod pool;
pub mod scratch;
mod sync_ptr;
pub mod transpose;

pub use sync_ptr::SyncPtr;

//! Compute precision of the matrix products inside f32 ops (matmul, conv, transposed conv and
//! the sparse convs, whose work is all GEMM): bf16 autocast.
//!
//! With `Bf16`, every f32 GEMM rounds its two operands to bfloat16 as it packs them and
//! accumulates the products in f32; tensors, outputs, gradients, norms, losses and optimizer
//! state stay f32. This is the "medium" matmul precision of PyTorch, and what autocast does to
//! convolutions, minus autocast's rounding of their outputs to bf16. On CPUs with AVX512-BF16 the
//! products run on `vdpbf16ps` (twice the multiply-adds of f32 FMA per instruction); elsewhere
//! the operands are rounded alike and multiplied in f32, so results agree across machines but
//! only the former is faster.
//!
//! The setting is process-wide, like the Winograd switch: GEMMs run on rayon worker threads, and
//! a thread-local flag would not reach them. Tests that change it live in their own test binary.

use std::sync::atomic::{AtomicU8, Ordering};

/// How f32 matrix products compute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MatmulPrecision {
    /// Full f32 products (the default).
    #[default]
    F32,
    /// Operands rounded to bfloat16 (round to nearest even), products accumulated in f32.
    Bf16,
}

impl MatmulPrecision {
    pub fn name(self) -> &'static str {
        match self {
            MatmulPrecision::F32 => "f32",
            MatmulPrecision::Bf16 => "bf16",
        }
    }

    /// Parses "f32" / "fp32" / "bf16" (the config and command-line spelling).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Some(MatmulPrecision::F32),
            "bf16" | "bfloat16" => Some(MatmulPrecision::Bf16),
            _ => None,
        }
    }
}

static PRECISION: AtomicU8 = AtomicU8::new(0);

/// Sets the precision of every later f32 matrix product in this process.
pub fn set_matmul_precision(p: MatmulPrecision) {
    PRECISION.store(p as u8, Ordering::Relaxed);
}

/// The precision f32 matrix products use now.
pub fn matmul_precision() -> MatmulPrecision {
    match PRECISION.load(Ordering::Relaxed) {
        0 => MatmulPrecision::F32,
        _ => MatmulPrecision::Bf16,
    }
}

/// Sets a precision until dropped, then restores the previous one (a training step's autocast).
#[must_use = "the precision reverts when the scope is dropped"]
pub struct PrecisionScope {
    previous: MatmulPrecision,
}

impl PrecisionScope {
    pub fn new(p: MatmulPrecision) -> Self {
        let previous = matmul_precision();
        set_matmul_precision(p);
        PrecisionScope { previous }
    }
}

impl Drop for PrecisionScope {
    fn drop(&mut self) {
        set_matmul_precision(self.previous);
    }
}

//! The GEMM that ops call: f32 on the CUDA cores, or, under bf16 autocast
//! (`MatmulPrecision::Bf16`, the same setting as the CPU's), the operands rounded to bf16 (round
//! to nearest even) and multiplied on the tensor cores with f32 accumulation.

use super::{CudaDevice, GemmShape};
use crate::{matmul_precision, MatmulPrecision, Result};
use cudarc::driver::{CudaView, CudaViewMut};

impl CudaDevice {
    /// `C = alpha op(A) op(B) + beta C` at the current matmul precision.
    pub fn gemm(
        &self,
        s: &GemmShape,
        alpha: f32,
        a: &CudaView<f32>,
        b: &CudaView<f32>,
        beta: f32,
        c: &mut CudaViewMut<f32>,
    ) -> Result<()> {
        match matmul_precision() {
            MatmulPrecision::F32 => self.gemm_f32(s, alpha, a, b, beta, c),
            MatmulPrecision::Bf16 => {
                // Round only the elements the product reads.
                let (na, nb, _) = s.extents();
                let a16 = self.cast_to_bf16(&a.slice(..na), na)?;
                let b16 = self.cast_to_bf16(&b.slice(..nb), nb)?;
                self.gemm_bf16(s, alpha, &a16.slice(..), &b16.slice(..), beta, c)
            }
        }
    }
}

//! Wrappers of `kernels/gemm_f32.cu` (SGEMM) and `kernels/gemm_bf16.cu` (tensor cores, f32
//! accumulation): batched, row-major, either operand transposed.

use super::compile::{GEMM_BF16, GEMM_F32};
use super::launch::int;
use super::CudaDevice;
use crate::{Error, Result};
use cudarc::driver::{sys, CudaView, CudaViewMut, LaunchConfig};

/// Output tile of one block of the f32 GEMM kernels (256 threads each).
const TILE: usize = 128;
/// Output tile (rows x columns) of one block of the bf16 GEMM kernels (256 threads each).
const BF16_TILE_M: usize = 128;
const BF16_TILE_N: usize = 256;
/// Dynamic shared memory of one bf16 GEMM block: `GB_SMEM_BYTES` in `kernels/gemm_bf16.cu`.
const BF16_SMEM_BYTES: u32 = 98_304;

/// One (batched) product `C = alpha * op(A) * op(B) + beta * C`, row-major. `op(A)` is
/// `[m, k]` (stored `[k, m]` when `trans_a`), `op(B)` is `[k, n]` (stored `[n, k]` when
/// `trans_b`); matrix `i` of a batch starts `i * stride_*` elements in.
#[derive(Clone, Copy, Debug)]
pub struct GemmShape {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    pub lda: usize,
    pub ldb: usize,
    pub ldc: usize,
    pub stride_a: usize,
    pub stride_b: usize,
    pub stride_c: usize,
    pub batch: usize,
}

impl GemmShape {
    /// A single product of contiguous row-major matrices.
    pub fn plain(m: usize, n: usize, k: usize, trans_a: bool, trans_b: bool) -> GemmShape {
        GemmShape {
            m,
            n,
            k,
            trans_a,
            trans_b,
            lda: if trans_a { m } else { k },
            ldb: if trans_b { k } else { n },
            ldc: n,
            stride_a: m * k,
            stride_b: k * n,
            stride_c: m * n,
            batch: 1,
        }
    }

    /// Elements each operand must hold.
    pub(crate) fn extents(&self) -> (usize, usize, usize) {
        let last = |stride: usize, rows: usize, ld: usize, cols: usize| {
            if rows == 0 || cols == 0 {
                0
            } else {
                (self.batch - 1) * stride + (rows - 1) * ld + cols
            }
        };
        let (ar, ac) = if self.trans_a { (self.k, self.m) } else { (self.m, self.k) };
        let (br, bc) = if self.trans_b { (self.n, self.k) } else { (self.k, self.n) };
        (
            last(self.stride_a, ar, self.lda, ac),
            last(self.stride_b, br, self.ldb, bc),
            last(self.stride_c, self.m, self.ldc, self.n),
        )
    }

    /// Grid of `tile_m x tile_n` output tiles per matrix, 256 threads a block.
    fn launch_config(&self, tile_m: usize, tile_n: usize, shared_mem_bytes: u32) -> Result<LaunchConfig> {
        if self.batch > 65535 {
            return Err(Error::Msg(format!("cuda gemm: batch {} exceeds 65535", self.batch)));
        }
        Ok(LaunchConfig {
            grid_dim: (self.n.div_ceil(tile_n) as u32, self.m.div_ceil(tile_m) as u32, self.batch as u32),
            block_dim: (256, 1, 1),
            shared_mem_bytes,
        })
    }

    /// No output element (nothing to launch).
    fn is_empty(&self) -> bool {
        self.m == 0 || self.n == 0 || self.batch == 0
    }

    /// The kernels' integer arguments: sizes, leading dimensions, batch strides.
    fn kernel_ints(&self) -> Result<([i32; 3], [i32; 3], [i64; 3])> {
        let i = |v: usize| int(v, "gemm");
        Ok((
            [i(self.m)?, i(self.n)?, i(self.k)?],
            [i(self.lda)?, i(self.ldb)?, i(self.ldc)?],
            [self.stride_a as i64, self.stride_b as i64, self.stride_c as i64],
        ))
    }

    fn check(&self, a: usize, b: usize, c: usize) -> Result<()> {
        let (ea, eb, ec) = self.extents();
        if a < ea || b < eb || c < ec {
            return Err(Error::Msg(format!(
                "cuda gemm {self:?}: buffers of {a}/{b}/{c} elements, needs {ea}/{eb}/{ec}"
            )));
        }
        Ok(())
    }
}

/// Operands are views, so a product can start inside a buffer (one group of a grouped conv,
/// one chunk of images): pass `buf.slice(start..)`.
impl CudaDevice {
    /// f32 GEMM on the CUDA cores.
    pub fn gemm_f32(
        &self,
        s: &GemmShape,
        alpha: f32,
        a: &CudaView<f32>,
        b: &CudaView<f32>,
        beta: f32,
        c: &mut CudaViewMut<f32>,
    ) -> Result<()> {
        s.check(a.len(), b.len(), c.len())?;
        if s.is_empty() {
            return Ok(());
        }
        let ([m, n, k], [lda, ldb, ldc], [sa, sb, sc]) = s.kernel_ints()?;
        let cfg = s.launch_config(TILE, TILE, 0)?;
        macro_rules! go {
            ($name:literal) => {
                super::launch::launch!(
                    self, GEMM_F32, $name, cfg, &m, &n, &k, &alpha, a, &lda, &sa, b, &ldb, &sb, &beta, c, &ldc, &sc
                )
            };
        }
        match (s.trans_a, s.trans_b) {
            (false, false) => go!("gemm_f32_nn"),
            (false, true) => go!("gemm_f32_nt"),
            (true, false) => go!("gemm_f32_tn"),
            (true, true) => go!("gemm_f32_tt"),
        }
        Ok(())
    }

    /// bf16 x bf16 -> f32 GEMM on the tensor cores (operands are bf16 bit patterns).
    pub fn gemm_bf16(
        &self,
        s: &GemmShape,
        alpha: f32,
        a: &CudaView<u16>,
        b: &CudaView<u16>,
        beta: f32,
        c: &mut CudaViewMut<f32>,
    ) -> Result<()> {
        s.check(a.len(), b.len(), c.len())?;
        if s.is_empty() {
            return Ok(());
        }
        let ([m, n, k], [lda, ldb, ldc], [sa, sb, sc]) = s.kernel_ints()?;
        let cfg = s.launch_config(BF16_TILE_M, BF16_TILE_N, BF16_SMEM_BYTES)?;
        macro_rules! go {
            ($name:literal) => {{
                // More than the default 48 KiB of dynamic shared memory must be opted into.
                self.function(&GEMM_BF16, $name)?
                    .set_attribute(
                        sys::CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                        BF16_SMEM_BYTES as i32,
                    )
                    .map_err(|e| self.driver_err(concat!("shared memory opt-in of ", $name), e))?;
                super::launch::launch!(
                    self, GEMM_BF16, $name, cfg, &m, &n, &k, &alpha, a, &lda, &sa, b, &ldb, &sb, &beta, c, &ldc, &sc
                )
            }};
        }
        match (s.trans_a, s.trans_b) {
            (false, false) => go!("gemm_bf16_nn"),
            (false, true) => go!("gemm_bf16_nt"),
            (true, false) => go!("gemm_bf16_tn"),
            (true, true) => go!("gemm_bf16_tt"),
        }
        Ok(())
    }
}

//! Wrappers of `kernels/reduce.cu`: sums and maxima over one axis, and a deterministic sum of
//! squares (the global gradient norm).

use super::compile::REDUCE;
use super::launch::{self, int, launch};
use super::CudaDevice;
use crate::Result;
use cudarc::driver::{CudaSlice, LaunchConfig};

/// Blocks of the first pass of `sumsq`; the second pass sums their partials.
const SUMSQ_BLOCKS: usize = 1024;

impl CudaDevice {
    /// Reduces the middle axis of `x` viewed as `[outer, r, inner]` to `[outer, inner]`
    /// (`max` instead of sum when asked).
    pub fn reduce_axis(
        &self,
        x: &CudaSlice<f32>,
        outer: usize,
        r: usize,
        inner: usize,
        max: bool,
    ) -> Result<CudaSlice<f32>> {
        let mut y = self.alloc::<f32>(outer * inner)?;
        let (o, rr, i) = (int(outer, "reduce")?, int(r, "reduce")?, int(inner, "reduce")?);
        match (inner == 1, max) {
            (true, false) => launch!(self, REDUCE, "sum_rows_f32", launch::per_row(outer), x, &mut y, &o, &rr),
            (true, true) => launch!(self, REDUCE, "max_rows_f32", launch::per_row(outer), x, &mut y, &o, &rr),
            (false, false) => {
                launch!(self, REDUCE, "sum_mid_f32", launch::elementwise(outer * inner), x, &mut y, &o, &rr, &i)
            }
            (false, true) => {
                launch!(self, REDUCE, "max_mid_f32", launch::elementwise(outer * inner), x, &mut y, &o, &rr, &i)
            }
        }
        Ok(y)
    }

    /// `sum x[i]^2` over `n` elements into a one-element buffer, in a fixed order.
    pub fn sum_of_squares(&self, x: &CudaSlice<f32>, n: usize) -> Result<CudaSlice<f32>> {
        let blocks = n.div_ceil(launch::BLOCK as usize).clamp(1, SUMSQ_BLOCKS);
        let mut partial = self.alloc::<f32>(blocks)?;
        let ni = int(n, "sum_of_squares")?;
        let cfg =
            LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (launch::BLOCK, 1, 1), shared_mem_bytes: 0 };
        launch!(self, REDUCE, "sumsq_partial_f32", cfg, x, &ni, &mut partial);
        self.reduce_axis(&partial, 1, blocks, 1, false)
    }
}

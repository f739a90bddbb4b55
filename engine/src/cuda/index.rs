//! Wrappers of `kernels/index.cu`: row selection and its adjoint (row scatter-add), and the
//! same along a middle axis. Indices are `i32` device buffers; a negative index selects zeros
//! or is skipped by the adds. Indices are not bounds-checked on the device: the caller checks
//! them on the host (every one below the indexed dim's size).

use super::compile::INDEX;
use super::launch::{self, int, launch};
use super::CudaDevice;
use crate::Result;
use cudarc::driver::CudaSlice;

impl CudaDevice {
    /// `y[i, :] = x[idx[i], :]` (zeros when `idx[i] < 0`) for `x` `[rows, cols]`, `idx` `[nidx]`,
    /// into a new `y` `[nidx, cols]`.
    pub fn index_select_rows(
        &self,
        x: &CudaSlice<f32>,
        idx: &CudaSlice<i32>,
        nidx: usize,
        cols: usize,
    ) -> Result<CudaSlice<f32>> {
        let mut y = self.alloc::<f32>(nidx * cols)?;
        let (ni, c) = (int(nidx, "index_select_rows")?, int(cols, "index_select_rows")?);
        launch!(self, INDEX, "index_select_rows_f32", launch::elementwise(nidx * cols), x, idx, &mut y, &ni, &c);
        Ok(y)
    }

    /// `y[idx[i], :] += src[i, :]` in place for `src` `[nidx, cols]`, `idx` `[nidx]`, `y`
    /// `[rows, cols]`, skipping `idx[i] < 0`. Repeated indices add up (atomics, in no fixed
    /// order). `y` is accumulated into: zero it first for a fresh gradient.
    pub fn index_add_rows(
        &self,
        y: &mut CudaSlice<f32>,
        src: &CudaSlice<f32>,
        idx: &CudaSlice<i32>,
        nidx: usize,
        cols: usize,
    ) -> Result<()> {
        let (ni, c) = (int(nidx, "index_add_rows")?, int(cols, "index_add_rows")?);
        launch!(self, INDEX, "index_add_rows_f32", launch::elementwise(nidx * cols), src, idx, y, &ni, &c);
        Ok(())
    }

    /// Index-select along a middle axis: `x` `[outer, src_dim, inner]`, `idx` `[nidx]`, into a
    /// new `y` `[outer, nidx, inner]` with `y[o, i, j] = x[o, idx[i], j]` (zeros when `idx[i] < 0`).
    pub fn gather(
        &self,
        x: &CudaSlice<f32>,
        idx: &CudaSlice<i32>,
        outer: usize,
        src_dim: usize,
        nidx: usize,
        inner: usize,
    ) -> Result<CudaSlice<f32>> {
        let n = outer * nidx * inner;
        let mut y = self.alloc::<f32>(n)?;
        let (o, s, ni, i) =
            (int(outer, "gather")?, int(src_dim, "gather")?, int(nidx, "gather")?, int(inner, "gather")?);
        launch!(self, INDEX, "gather_f32", launch::elementwise(n), x, idx, &mut y, &o, &s, &ni, &i);
        Ok(y)
    }

    /// The adjoint of [`CudaDevice::gather`], in place: `y[o, idx[i], j] += src[o, i, j]` for
    /// `src` `[outer, nidx, inner]`, `y` `[outer, src_dim, inner]`, skipping `idx[i] < 0`.
    /// Repeated indices add up (atomics, in no fixed order); `y` is accumulated into.
    pub fn scatter_add(
        &self,
        y: &mut CudaSlice<f32>,
        src: &CudaSlice<f32>,
        idx: &CudaSlice<i32>,
        outer: usize,
        src_dim: usize,
        nidx: usize,
        inner: usize,
    ) -> Result<()> {
        let n = outer * nidx * inner;
        let op = "scatter_add";
        let (o, s, ni, i) = (int(outer, op)?, int(src_dim, op)?, int(nidx, op)?, int(inner, op)?);
        launch!(self, INDEX, "scatter_add_f32", launch::elementwise(n), src, idx, y, &o, &s, &ni, &i);
        Ok(())
    }
}

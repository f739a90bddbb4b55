//! Wrappers of `kernels/conv.cu` and the convolutions built on them: im2col (chunks of images)
//! then one batched GEMM per group, col2im for the input gradient, per-image weight-gradient
//! products summed over the chunk; depthwise convs (ConvNeXt's 7x7) run their direct kernels.
//! 1x1 / stride-1 / unpadded convs skip im2col: the input plane already is the column matrix.

use super::compile::CONV;
use super::launch::{self, int, launch};
use super::{CudaDevice, GemmShape};
use crate::cpu::conv::ConvGeom;
use crate::Result;
use cudarc::driver::{CudaSlice, LaunchConfig};

/// Most bytes of an im2col buffer; images are processed in chunks that fit.
const COL_BUDGET: usize = 512 << 20;

pub(crate) fn is_pointwise(g: &ConvGeom) -> bool {
    g.kh == 1 && g.kw == 1 && g.stride == [1, 1] && g.pad == [0, 0]
}

/// Depthwise geometries the direct kernels cover (square, dilation 1, same stride and padding).
pub(crate) fn is_direct_depthwise(g: &ConvGeom) -> bool {
    g.groups == g.cin
        && g.cin == g.cout
        && g.kh == g.kw
        && g.dil == [1, 1]
        && g.stride[0] == g.stride[1]
        && g.pad[0] == g.pad[1]
}

/// Images per im2col chunk: as many as fit `COL_BUDGET`, at least one.
pub(crate) fn chunk_images(g: &ConvGeom) -> usize {
    let per_image = g.cin * g.kh * g.kw * g.l() * 4;
    (COL_BUDGET / per_image.max(1)).clamp(1, g.n.max(1))
}

impl CudaDevice {
    /// The 14 ints after the buffers of `im2col_f32` / `col2im_f32`, for `n` images.
    fn im2col_args(g: &ConvGeom, n: usize) -> Result<[i32; 14]> {
        let v = [
            n,
            g.cin,
            g.h,
            g.w,
            g.kh,
            g.kw,
            g.stride[0],
            g.stride[1],
            g.pad[0],
            g.pad[1],
            g.dil[0],
            g.dil[1],
            g.oh,
            g.ow,
        ];
        let mut a = [0i32; 14];
        for (i, &x) in v.iter().enumerate() {
            a[i] = int(x, "conv2d")?;
        }
        Ok(a)
    }

    /// `col [n][cin*kh*kw][oh*ow]` of `n` images starting at `x`.
    fn im2col(
        &self,
        x: &cudarc::driver::CudaView<f32>,
        col: &mut CudaSlice<f32>,
        g: &ConvGeom,
        n: usize,
    ) -> Result<()> {
        let a = Self::im2col_args(g, n)?;
        let work = n * g.cin * g.kh * g.kw * g.l();
        launch!(self, CONV, "im2col_f32", launch::elementwise(work), x, col; a);
        Ok(())
    }

    /// The adjoint of `im2col`: writes (overwrites) `n` images of `x` from `col`.
    fn col2im(
        &self,
        col: &CudaSlice<f32>,
        x: &mut cudarc::driver::CudaViewMut<f32>,
        g: &ConvGeom,
        n: usize,
    ) -> Result<()> {
        let a = Self::im2col_args(g, n)?;
        let work = n * g.cin * g.h * g.w;
        launch!(self, CONV, "col2im_f32", launch::elementwise(work), col, x; a);
        Ok(())
    }

    /// Launch of the depthwise forward / input-gradient kernels over `outputs` elements: 256
    /// threads, one block per 1024 outputs (a tile holds at most 2048; blocks beyond the tile
    /// count return at once, and the kernels loop over tiles when the grid is smaller).
    fn depthwise_tiles(outputs: usize) -> LaunchConfig {
        let blocks = outputs.div_ceil(1024).clamp(1, 65535) as u32;
        LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (launch::BLOCK, 1, 1), shared_mem_bytes: 0 }
    }

    fn depthwise_args(g: &ConvGeom) -> Result<[i32; 9]> {
        let v = [g.n, g.cin, g.h, g.w, g.kh, g.stride[0], g.pad[0], g.oh, g.ow];
        let mut a = [0i32; 9];
        for (i, &x) in v.iter().enumerate() {
            a[i] = int(x, "depthwise conv2d")?;
        }
        Ok(a)
    }

    /// `y [n, cout, oh, ow] = conv2d(x [n, cin, h, w], w [cout, cin/groups, kh, kw]) (+ bias)`.
    pub fn conv2d_forward(
        &self,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        bias: Option<&CudaSlice<f32>>,
        g: &ConvGeom,
    ) -> Result<CudaSlice<f32>> {
        let mut y = self.alloc::<f32>(g.out_len())?;
        if is_direct_depthwise(g) {
            let a = Self::depthwise_args(g)?;
            let none = 0u64; // nullptr: the bias is added below
            launch!(self, CONV, "dwconv_fwd_f32", Self::depthwise_tiles(g.out_len()), x, w, &none, &mut y; a);
        } else {
            let (k, l, cg, og) = (g.k(), g.l(), g.cin_g(), g.cout_g());
            let chunk = chunk_images(g);
            let mut col =
                if is_pointwise(g) { None } else { Some(self.alloc::<f32>(chunk * g.cin * g.kh * g.kw * l)?) };
            for n0 in (0..g.n).step_by(chunk) {
                let nc = chunk.min(g.n - n0);
                if let Some(col) = col.as_mut() {
                    self.im2col(&x.slice(n0 * g.cin * g.h * g.w..), col, g, nc)?;
                }
                for gi in 0..g.groups {
                    // y[n, group rows, L] = W_g [og, k] x col_g [k, L], batched over the chunk.
                    let s = GemmShape {
                        stride_a: 0,
                        stride_b: g.groups * k * l,
                        stride_c: g.cout * l,
                        batch: nc,
                        ..GemmShape::plain(og, l, k, false, false)
                    };
                    let b = match &col {
                        Some(col) => col.slice(gi * k * l..),
                        None => x.slice((n0 * g.cin + gi * cg) * l..),
                    };
                    self.gemm(
                        &s,
                        1.0,
                        &w.slice(gi * og * k..),
                        &b,
                        0.0,
                        &mut y.slice_mut((n0 * g.cout + gi * og) * l..),
                    )?;
                }
            }
        }
        if let Some(b) = bias {
            self.bias_add(&mut y, b, g.n, g.cout, g.l())?;
        }
        Ok(y)
    }

    /// `gx [n, cin, h, w]` from `gy [n, cout, oh, ow]` and the weight.
    pub fn conv2d_backward_input(
        &self,
        gy: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        g: &ConvGeom,
    ) -> Result<CudaSlice<f32>> {
        let mut gx = self.alloc::<f32>(g.in_len())?;
        if is_direct_depthwise(g) {
            let a = Self::depthwise_args(g)?;
            launch!(self, CONV, "dwconv_bwd_input_f32", Self::depthwise_tiles(g.in_len()), gy, w, &mut gx; a);
            return Ok(gx);
        }
        let (k, l, cg, og) = (g.k(), g.l(), g.cin_g(), g.cout_g());
        let chunk = chunk_images(g);
        let pointwise = is_pointwise(g);
        let mut col = if pointwise { None } else { Some(self.alloc::<f32>(chunk * g.cin * g.kh * g.kw * l)?) };
        for n0 in (0..g.n).step_by(chunk) {
            let nc = chunk.min(g.n - n0);
            for gi in 0..g.groups {
                // col_g [k, L] = W_g^T [k, og] x gy_g [og, L], batched over the chunk.
                let s = GemmShape {
                    stride_a: 0,
                    stride_b: g.cout * l,
                    stride_c: g.groups * k * l,
                    batch: nc,
                    ..GemmShape::plain(k, l, og, true, false)
                };
                let (a, b) = (w.slice(gi * og * k..), gy.slice((n0 * g.cout + gi * og) * l..));
                match col.as_mut() {
                    Some(col) => self.gemm(&s, 1.0, &a, &b, 0.0, &mut col.slice_mut(gi * k * l..))?,
                    None => {
                        let s = GemmShape { stride_c: g.cin * l, ..s };
                        self.gemm(&s, 1.0, &a, &b, 0.0, &mut gx.slice_mut((n0 * g.cin + gi * cg) * l..))?
                    }
                }
            }
            if let Some(col) = &col {
                self.col2im(col, &mut gx.slice_mut(n0 * g.cin * g.h * g.w..), g, nc)?;
            }
        }
        Ok(gx)
    }

    /// `gw [cout, cin/groups, kh, kw]` from the input and `gy`.
    pub fn conv2d_backward_weight(
        &self,
        x: &CudaSlice<f32>,
        gy: &CudaSlice<f32>,
        g: &ConvGeom,
    ) -> Result<CudaSlice<f32>> {
        let mut gw = self.alloc::<f32>(g.weight_len())?;
        if is_direct_depthwise(g) {
            let a = Self::depthwise_args(g)?;
            let cfg = launch::per_row(g.cout); // one block per channel
            launch!(self, CONV, "dwconv_bwd_weight_f32", cfg, x, gy, &mut gw; a);
            return Ok(gw);
        }
        let (k, l, cg, og) = (g.k(), g.l(), g.cin_g(), g.cout_g());
        let chunk = chunk_images(g);
        let pointwise = is_pointwise(g);
        let mut col = if pointwise { None } else { Some(self.alloc::<f32>(chunk * g.cin * g.kh * g.kw * l)?) };
        // One weight-gradient per image of the chunk, summed after: the batched GEMM keeps every
        // SM busy where one product per image would not.
        let wlen = g.weight_len();
        let mut partial = self.alloc::<f32>(chunk * wlen)?;
        for n0 in (0..g.n).step_by(chunk) {
            let nc = chunk.min(g.n - n0);
            if let Some(col) = col.as_mut() {
                self.im2col(&x.slice(n0 * g.cin * g.h * g.w..), col, g, nc)?;
            }
            for gi in 0..g.groups {
                // gw_g [og, k] = gy_g [og, L] x col_g^T [L, k], per image.
                let s = GemmShape {
                    stride_a: g.cout * l,
                    stride_b: g.groups * k * l,
                    stride_c: wlen,
                    batch: nc,
                    ..GemmShape::plain(og, k, l, false, true)
                };
                let b = match &col {
                    Some(col) => col.slice(gi * k * l..),
                    None => x.slice((n0 * g.cin + gi * cg) * l..),
                };
                let s = if pointwise { GemmShape { stride_b: g.cin * l, ..s } } else { s };
                self.gemm(
                    &s,
                    1.0,
                    &gy.slice((n0 * g.cout + gi * og) * l..),
                    &b,
                    0.0,
                    &mut partial.slice_mut(gi * og * k..),
                )?;
            }
            let sum = self.reduce_axis(&partial, 1, nc, wlen, false)?;
            if n0 == 0 {
                gw = sum;
            } else {
                self.axpy(&mut gw, &sum, 1.0, wlen)?;
            }
        }
        Ok(gw)
    }

    /// `y [n, c, hw] += bias[c]`.
    pub fn bias_add(&self, y: &mut CudaSlice<f32>, bias: &CudaSlice<f32>, n: usize, c: usize, hw: usize) -> Result<()> {
        let (ni, ci, hwi) = (int(n, "bias_add")?, int(c, "bias_add")?, int(hw, "bias_add")?);
        launch!(self, CONV, "bias_add_nchw_f32", launch::elementwise(n * c * hw), y, bias, &ni, &ci, &hwi);
        Ok(())
    }

    /// `y[c] = sum over n and positions of x [n, c, hw]` (the bias gradient).
    pub fn channel_sum(&self, x: &CudaSlice<f32>, n: usize, c: usize, hw: usize) -> Result<CudaSlice<f32>> {
        let mut y = self.alloc::<f32>(c)?;
        let (ni, ci, hwi) = (int(n, "channel_sum")?, int(c, "channel_sum")?, int(hw, "channel_sum")?);
        launch!(self, CONV, "channel_sum_nchw_f32", launch::per_row(c), x, &mut y, &ni, &ci, &hwi);
        Ok(y)
    }
}

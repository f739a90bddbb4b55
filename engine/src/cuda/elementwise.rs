//! Wrappers of `kernels/elementwise.cu`: fills, unary maps and their gradients, binary ops
//! (same shape or broadcast through strides), strided copies, and f32 <-> bf16 casts.

use super::compile::{ELEMENTWISE, GEMM_BF16};
use super::launch::{self, int, launch};
use super::CudaDevice;
use crate::Result;
use cudarc::driver::{CudaSlice, CudaView, DeviceRepr};

/// Most dims a strided or broadcast kernel walks (after merging contiguous runs).
pub const MAX_DIMS: usize = 6;

/// Strides of both operands of a broadcast binary op over the output's shape (`bcast_*` kernels).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Bcast {
    pub ndim: i32,
    pub dims: [i32; MAX_DIMS],
    pub sa: [i32; MAX_DIMS],
    pub sb: [i32; MAX_DIMS],
    pub oa: i32,
    pub ob: i32,
}
// SAFETY: plain `#[repr(C)]` ints, the same layout as `struct Bcast` in elementwise.cu.
unsafe impl DeviceRepr for Bcast {}

/// A strided view to copy into a contiguous buffer (`strided_copy_f32`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Strided {
    pub ndim: i32,
    pub dims: [i32; MAX_DIMS],
    pub st: [i32; MAX_DIMS],
    pub off: i32,
}
// SAFETY: as above, `struct Strided` in elementwise.cu.
unsafe impl DeviceRepr for Strided {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unary {
    Relu,
    Relu6,
    Gelu,
    Sigmoid,
    Tanh,
    Exp,
    Log,
    Sqrt,
    Rsqrt,
    Abs,
    Neg,
    Sqr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
}

impl CudaDevice {
    /// Copies host values to a new device buffer.
    pub fn upload<T: DeviceRepr>(&self, host: &[T]) -> Result<CudaSlice<T>> {
        let mut d = self.alloc::<T>(host.len())?;
        if !host.is_empty() {
            self.stream()
                .memcpy_htod(host, &mut d.slice_mut(..host.len()))
                .map_err(|e| self.driver_err("host-to-device copy", e))?;
        }
        Ok(d)
    }

    /// Copies the first `n` elements of a device buffer to the host (waits for the stream).
    pub fn download<T: DeviceRepr + Default + Clone>(&self, d: &CudaSlice<T>, n: usize) -> Result<Vec<T>> {
        let mut host = vec![T::default(); n];
        if n > 0 {
            self.stream()
                .memcpy_dtoh(&d.slice(..n), &mut host)
                .map_err(|e| self.driver_err("device-to-host copy", e))?;
        }
        self.synchronize()?;
        Ok(host)
    }

    /// `y[..n] = v`.
    pub fn fill(&self, y: &mut CudaSlice<f32>, v: f32, n: usize) -> Result<()> {
        let ni = int(n, "fill")?;
        launch!(self, ELEMENTWISE, "fill_f32", launch::elementwise(n), y, &v, &ni);
        Ok(())
    }

    /// `y = f(x)` over `n` elements.
    pub fn unary(&self, op: Unary, x: &CudaSlice<f32>, n: usize) -> Result<CudaSlice<f32>> {
        let mut y = self.alloc::<f32>(n)?;
        let ni = int(n, "unary")?;
        let cfg = launch::elementwise(n);
        match op {
            Unary::Relu => launch!(self, ELEMENTWISE, "unary_relu_f32", cfg, x, &mut y, &ni),
            Unary::Relu6 => launch!(self, ELEMENTWISE, "unary_relu6_f32", cfg, x, &mut y, &ni),
            Unary::Gelu => launch!(self, ELEMENTWISE, "unary_gelu_f32", cfg, x, &mut y, &ni),
            Unary::Sigmoid => launch!(self, ELEMENTWISE, "unary_sigmoid_f32", cfg, x, &mut y, &ni),
            Unary::Tanh => launch!(self, ELEMENTWISE, "unary_tanh_f32", cfg, x, &mut y, &ni),
            Unary::Exp => launch!(self, ELEMENTWISE, "unary_exp_f32", cfg, x, &mut y, &ni),
            Unary::Log => launch!(self, ELEMENTWISE, "unary_log_f32", cfg, x, &mut y, &ni),
            Unary::Sqrt => launch!(self, ELEMENTWISE, "unary_sqrt_f32", cfg, x, &mut y, &ni),
            Unary::Rsqrt => launch!(self, ELEMENTWISE, "unary_rsqrt_f32", cfg, x, &mut y, &ni),
            Unary::Abs => launch!(self, ELEMENTWISE, "unary_abs_f32", cfg, x, &mut y, &ni),
            Unary::Neg => launch!(self, ELEMENTWISE, "unary_neg_f32", cfg, x, &mut y, &ni),
            Unary::Sqr => launch!(self, ELEMENTWISE, "unary_sqr_f32", cfg, x, &mut y, &ni),
        }
        Ok(y)
    }

    /// `gx = gy * f'(x)` for the activations with a kernel of their own.
    pub fn unary_backward(
        &self,
        op: Unary,
        x: &CudaSlice<f32>,
        gy: &CudaSlice<f32>,
        n: usize,
    ) -> Result<CudaSlice<f32>> {
        let mut gx = self.alloc::<f32>(n)?;
        let ni = int(n, "unary_backward")?;
        let cfg = launch::elementwise(n);
        match op {
            Unary::Relu => launch!(self, ELEMENTWISE, "unary_bwd_relu_f32", cfg, x, gy, &mut gx, &ni),
            Unary::Relu6 => launch!(self, ELEMENTWISE, "unary_bwd_relu6_f32", cfg, x, gy, &mut gx, &ni),
            Unary::Gelu => launch!(self, ELEMENTWISE, "unary_bwd_gelu_f32", cfg, x, gy, &mut gx, &ni),
            Unary::Sigmoid => launch!(self, ELEMENTWISE, "unary_bwd_sigmoid_f32", cfg, x, gy, &mut gx, &ni),
            Unary::Tanh => launch!(self, ELEMENTWISE, "unary_bwd_tanh_f32", cfg, x, gy, &mut gx, &ni),
            other => {
                return Err(crate::Error::Msg(format!("cuda unary_backward: {other:?} has no fused gradient kernel")))
            }
        }
        Ok(gx)
    }

    /// `y = x * mul + add`.
    pub fn affine(&self, x: &CudaSlice<f32>, mul: f32, add: f32, n: usize) -> Result<CudaSlice<f32>> {
        let mut y = self.alloc::<f32>(n)?;
        let ni = int(n, "affine")?;
        launch!(self, ELEMENTWISE, "affine_f32", launch::elementwise(n), x, &mut y, &mul, &add, &ni);
        Ok(y)
    }

    /// `y = a op b`, both contiguous with `n` elements.
    pub fn binary(&self, op: Binary, a: &CudaSlice<f32>, b: &CudaSlice<f32>, n: usize) -> Result<CudaSlice<f32>> {
        let mut y = self.alloc::<f32>(n)?;
        let ni = int(n, "binary")?;
        let cfg = launch::elementwise(n);
        match op {
            Binary::Add => launch!(self, ELEMENTWISE, "binary_add_f32", cfg, a, b, &mut y, &ni),
            Binary::Sub => launch!(self, ELEMENTWISE, "binary_sub_f32", cfg, a, b, &mut y, &ni),
            Binary::Mul => launch!(self, ELEMENTWISE, "binary_mul_f32", cfg, a, b, &mut y, &ni),
            Binary::Div => launch!(self, ELEMENTWISE, "binary_div_f32", cfg, a, b, &mut y, &ni),
            Binary::Max => launch!(self, ELEMENTWISE, "binary_max_f32", cfg, a, b, &mut y, &ni),
            Binary::Min => launch!(self, ELEMENTWISE, "binary_min_f32", cfg, a, b, &mut y, &ni),
        }
        Ok(y)
    }

    /// `y = a op b` over the broadcast shape in `s` (`n` = its element count).
    pub fn binary_broadcast(
        &self,
        op: Binary,
        a: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
        s: Bcast,
        n: usize,
    ) -> Result<CudaSlice<f32>> {
        let mut y = self.alloc::<f32>(n)?;
        let ni = int(n, "binary_broadcast")?;
        let cfg = launch::elementwise(n);
        match op {
            Binary::Add => launch!(self, ELEMENTWISE, "bcast_add_f32", cfg, a, b, &mut y, &ni, &s),
            Binary::Sub => launch!(self, ELEMENTWISE, "bcast_sub_f32", cfg, a, b, &mut y, &ni, &s),
            Binary::Mul => launch!(self, ELEMENTWISE, "bcast_mul_f32", cfg, a, b, &mut y, &ni, &s),
            Binary::Div => launch!(self, ELEMENTWISE, "bcast_div_f32", cfg, a, b, &mut y, &ni, &s),
            Binary::Max => launch!(self, ELEMENTWISE, "bcast_max_f32", cfg, a, b, &mut y, &ni, &s),
            Binary::Min => launch!(self, ELEMENTWISE, "bcast_min_f32", cfg, a, b, &mut y, &ni, &s),
        }
        Ok(y)
    }

    /// A contiguous copy of the strided view `s` of `x` (`n` elements).
    pub fn strided_copy(&self, x: &CudaSlice<f32>, s: Strided, n: usize) -> Result<CudaSlice<f32>> {
        let mut y = self.alloc::<f32>(n)?;
        let ni = int(n, "strided_copy")?;
        launch!(self, ELEMENTWISE, "strided_copy_f32", launch::elementwise(n), x, &mut y, &ni, &s);
        Ok(y)
    }

    /// `y += a * x` (`a = 1` is gradient accumulation).
    pub fn axpy(&self, y: &mut CudaSlice<f32>, x: &CudaSlice<f32>, a: f32, n: usize) -> Result<()> {
        let ni = int(n, "axpy")?;
        launch!(self, ELEMENTWISE, "axpy_f32", launch::elementwise(n), y, x, &a, &ni);
        Ok(())
    }

    /// f32 -> bf16 bits, round to nearest even.
    pub fn cast_to_bf16(&self, x: &CudaView<f32>, n: usize) -> Result<CudaSlice<u16>> {
        let mut y = self.alloc::<u16>(n)?;
        let ni = int(n, "cast_to_bf16")?;
        launch!(self, GEMM_BF16, "cast_f32_to_bf16", launch::elementwise(n), x, &mut y, &ni);
        Ok(y)
    }

    /// bf16 bits -> f32 (exact).
    pub fn cast_to_f32(&self, x: &CudaSlice<u16>, n: usize) -> Result<CudaSlice<f32>> {
        let mut y = self.alloc::<f32>(n)?;
        let ni = int(n, "cast_to_f32")?;
        launch!(self, GEMM_BF16, "cast_bf16_to_f32", launch::elementwise(n), x, &mut y, &ni);
        Ok(y)
    }
}

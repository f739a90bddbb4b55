//! Wrappers of `kernels/pool.cu` and the ops built on them: max pooling (its argmax kept on the
//! device for the backward), average pooling (`count_include_pad=True`), adaptive average
//! pooling, nearest upsampling and `repeat_interleave` (nearest upsampling along one axis).
//! Every backward but max pooling's is a gather kernel: no atomics, the CPU's summation order.

use super::compile::POOL;
use super::launch::{self, int, launch};
use super::tensor::{device_of, f32_only, from_f32, with_f32};
use super::CudaDevice;
use crate::autograd::Op;
use crate::{Result, Tensor};
use cudarc::driver::CudaSlice;

/// Geometry of a sliding 2-D pool: input `[n, c, h, w]`, output `[n, c, out[0], out[1]]`;
/// index 0 of each pair is height, 1 is width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2d {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub pad: [usize; 2],
    pub out: [usize; 2],
}

impl Pool2d {
    pub fn in_len(&self) -> usize {
        self.n * self.c * self.h * self.w
    }
    pub fn out_len(&self) -> usize {
        self.n * self.c * self.out[0] * self.out[1]
    }
    fn in_dims(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }
    fn out_dims(&self) -> [usize; 4] {
        [self.n, self.c, self.out[0], self.out[1]]
    }

    /// The 12 ints after the buffers of the sliding-pool kernels (N, C, H, W, KH, KW, SH, SW,
    /// PH, PW, HO, WO), checking that the in-plane indices the kernels form fit too.
    fn args(&self, op: &'static str) -> Result<[i32; 12]> {
        int(self.h * self.w, op)?;
        int(self.out[0] * self.out[1], op)?;
        let v = [
            self.n,
            self.c,
            self.h,
            self.w,
            self.kernel[0],
            self.kernel[1],
            self.stride[0],
            self.stride[1],
            self.pad[0],
            self.pad[1],
            self.out[0],
            self.out[1],
        ];
        let mut a = [0i32; 12];
        for (i, &x) in v.iter().enumerate() {
            a[i] = int(x, op)?;
        }
        Ok(a)
    }

    /// The 6 ints of the adaptive kernels (N, C, H, W, HO, WO).
    fn adaptive_args(&self, op: &'static str) -> Result<[i32; 6]> {
        int(self.h * self.w, op)?;
        int(self.out[0] * self.out[1], op)?;
        let v = [self.n, self.c, self.h, self.w, self.out[0], self.out[1]];
        let mut a = [0i32; 6];
        for (i, &x) in v.iter().enumerate() {
            a[i] = int(x, op)?;
        }
        Ok(a)
    }
}

/// The 6 ints of the nearest-upsampling kernels (N, C, H, W, SY, SX) for `x [n, c, h, w]`.
fn upsample_args(d: [usize; 4], sy: usize, sx: usize, op: &'static str) -> Result<[i32; 6]> {
    int(d[2] * sy * d[3] * sx, op)?; // one output plane, indexed by int in the kernels
    let v = [d[0], d[1], d[2], d[3], sy, sx];
    let mut a = [0i32; 6];
    for (i, &x) in v.iter().enumerate() {
        a[i] = int(x, op)?;
    }
    Ok(a)
}

impl CudaDevice {
    /// Max pool: `y [n, c, ho, wo]` and per output the in-plane index `iy * w + ix` of its
    /// (first) maximum, -1 for a window of padding only.
    pub fn max_pool2d_forward(&self, x: &CudaSlice<f32>, g: &Pool2d) -> Result<(CudaSlice<f32>, CudaSlice<i32>)> {
        let a = g.args("max_pool2d")?;
        let mut y = self.alloc::<f32>(g.out_len())?;
        let mut argmax = self.alloc::<i32>(g.out_len())?;
        launch!(self, POOL, "maxpool2d_fwd_f32", launch::elementwise(g.out_len()), x, &mut y, &mut argmax; a);
        Ok((y, argmax))
    }

    /// `gx [n, c, h, w]`: each output gradient added at its argmax (from `max_pool2d_forward`).
    pub fn max_pool2d_backward(
        &self,
        gy: &CudaSlice<f32>,
        argmax: &CudaSlice<i32>,
        g: &Pool2d,
    ) -> Result<CudaSlice<f32>> {
        const OP: &str = "max_pool2d backward";
        let mut gx = self.alloc_zeroed(g.in_len())?;
        let (nc, hw, howo) = (int(g.n * g.c, OP)?, int(g.h * g.w, OP)?, int(g.out[0] * g.out[1], OP)?);
        launch!(
            self,
            POOL,
            "maxpool2d_bwd_f32",
            launch::elementwise(g.out_len()),
            gy,
            argmax,
            &mut gx,
            &nc,
            &hw,
            &howo
        );
        Ok(gx)
    }

    /// Average pool, zero padding counted in the divisor: `y [n, c, ho, wo]`.
    pub fn avg_pool2d_forward(&self, x: &CudaSlice<f32>, g: &Pool2d) -> Result<CudaSlice<f32>> {
        let a = g.args("avg_pool2d")?;
        let mut y = self.alloc::<f32>(g.out_len())?;
        launch!(self, POOL, "avgpool2d_fwd_f32", launch::elementwise(g.out_len()), x, &mut y; a);
        Ok(y)
    }

    /// The adjoint of `avg_pool2d_forward`: `gx [n, c, h, w]` from `gy [n, c, ho, wo]`.
    pub fn avg_pool2d_backward(&self, gy: &CudaSlice<f32>, g: &Pool2d) -> Result<CudaSlice<f32>> {
        let a = g.args("avg_pool2d backward")?;
        let mut gx = self.alloc::<f32>(g.in_len())?;
        launch!(self, POOL, "avgpool2d_bwd_f32", launch::elementwise(g.in_len()), gy, &mut gx; a);
        Ok(gx)
    }

    /// Adaptive average pool to `g.out` (PyTorch's windows; `kernel`, `stride`, `pad` unused).
    pub fn adaptive_avg_pool2d_forward(&self, x: &CudaSlice<f32>, g: &Pool2d) -> Result<CudaSlice<f32>> {
        let a = g.adaptive_args("adaptive_avg_pool2d")?;
        let mut y = self.alloc::<f32>(g.out_len())?;
        launch!(self, POOL, "adaptive_avgpool2d_fwd_f32", launch::elementwise(g.out_len()), x, &mut y; a);
        Ok(y)
    }

    /// The adjoint of `adaptive_avg_pool2d_forward`.
    pub fn adaptive_avg_pool2d_backward(&self, gy: &CudaSlice<f32>, g: &Pool2d) -> Result<CudaSlice<f32>> {
        let a = g.adaptive_args("adaptive_avg_pool2d backward")?;
        let mut gx = self.alloc::<f32>(g.in_len())?;
        launch!(self, POOL, "adaptive_avgpool2d_bwd_f32", launch::elementwise(g.in_len()), gy, &mut gx; a);
        Ok(gx)
    }

    /// `y [n, c, h*sy, w*sx]`, each pixel of `x [n, c, h, w]` repeated `sy x sx` times.
    pub fn upsample_nearest_forward(
        &self,
        x: &CudaSlice<f32>,
        dims: [usize; 4],
        sy: usize,
        sx: usize,
    ) -> Result<CudaSlice<f32>> {
        let a = upsample_args(dims, sy, sx, "upsample_nearest")?;
        let n = dims.iter().product::<usize>() * sy * sx;
        let mut y = self.alloc::<f32>(n)?;
        launch!(self, POOL, "upsample_nearest_fwd_f32", launch::elementwise(n), x, &mut y; a);
        Ok(y)
    }

    /// `gx [n, c, h, w]`: the sum of each pixel's `sy x sx` copies in `gy [n, c, h*sy, w*sx]`.
    pub fn upsample_nearest_backward(
        &self,
        gy: &CudaSlice<f32>,
        dims: [usize; 4],
        sy: usize,
        sx: usize,
    ) -> Result<CudaSlice<f32>> {
        let a = upsample_args(dims, sy, sx, "upsample_nearest backward")?;
        let n = dims.iter().product::<usize>();
        let mut gx = self.alloc::<f32>(n)?;
        launch!(self, POOL, "upsample_nearest_bwd_f32", launch::elementwise(n), gy, &mut gx; a);
        Ok(gx)
    }
}

// ------------------------------------------------------------------------------ tensor ops

/// Max pooling of the CUDA tensor `x` (shape and geometry checked by `Tensor::max_pool2d`).
pub(crate) fn max_pool2d(x: &Tensor, g: Pool2d) -> Result<Tensor> {
    const OP: &str = "max_pool2d";
    f32_only(x, OP)?;
    let (y, argmax) = with_f32(x, OP, |dev, xb| dev.max_pool2d_forward(xb, &g))?;
    let out = from_f32(&device_of(x)?, y, &g.out_dims());
    Ok(out.attach_op(vec![x.clone()], MaxPoolOp { g, argmax }))
}

struct MaxPoolOp {
    g: Pool2d,
    /// In-plane index of each output's maximum, on the device (`maxpool2d_fwd_f32`'s layout).
    argmax: CudaSlice<i32>,
}

impl Op for MaxPoolOp {
    fn name(&self) -> &'static str {
        "max_pool2d"
    }
    fn backward(&self, inputs: &[Tensor], _: &Tensor, go: &Tensor) -> Result<Vec<Option<Tensor>>> {
        const OP: &str = "max_pool2d backward";
        let gx = with_f32(go, OP, |dev, gb| dev.max_pool2d_backward(gb, &self.argmax, &self.g))?;
        Ok(vec![Some(from_f32(&device_of(&inputs[0])?, gx, &self.g.in_dims()))])
    }
}

/// Average pooling (`count_include_pad=True`) of the CUDA tensor `x`.
pub(crate) fn avg_pool2d(x: &Tensor, g: Pool2d) -> Result<Tensor> {
    avg_pool(x, g, false, "avg_pool2d")
}

/// Adaptive average pooling of the CUDA tensor `x` (`g.out` is the output size; the sliding
/// fields of `g` are unused).
pub(crate) fn adaptive_avg_pool2d(x: &Tensor, g: Pool2d) -> Result<Tensor> {
    avg_pool(x, g, true, "adaptive_avg_pool2d")
}

fn avg_pool(x: &Tensor, g: Pool2d, adaptive: bool, name: &'static str) -> Result<Tensor> {
    f32_only(x, name)?;
    let y = with_f32(x, name, |dev, xb| match adaptive {
        true => dev.adaptive_avg_pool2d_forward(xb, &g),
        false => dev.avg_pool2d_forward(xb, &g),
    })?;
    let out = from_f32(&device_of(x)?, y, &g.out_dims());
    Ok(out.attach_op(vec![x.clone()], AvgPoolOp { g, adaptive, name }))
}

struct AvgPoolOp {
    g: Pool2d,
    adaptive: bool,
    name: &'static str,
}

impl Op for AvgPoolOp {
    fn name(&self) -> &'static str {
        self.name
    }
    fn backward(&self, inputs: &[Tensor], _: &Tensor, go: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let gx = with_f32(go, self.name, |dev, gb| match self.adaptive {
            true => dev.adaptive_avg_pool2d_backward(gb, &self.g),
            false => dev.avg_pool2d_backward(gb, &self.g),
        })?;
        Ok(vec![Some(from_f32(&device_of(&inputs[0])?, gx, &self.g.in_dims()))])
    }
}

/// Nearest upsampling of the CUDA tensor `x [n, c, h, w]` by `(sy, sx)`; the caller attaches
/// the op (its backward is `upsample_nearest2d_backward`).
pub(crate) fn upsample_nearest2d(x: &Tensor, sy: usize, sx: usize) -> Result<Tensor> {
    const OP: &str = "upsample_nearest2d";
    f32_only(x, OP)?;
    let d = [x.dims()[0], x.dims()[1], x.dims()[2], x.dims()[3]];
    let y = with_f32(x, OP, |dev, xb| dev.upsample_nearest_forward(xb, d, sy, sx))?;
    Ok(from_f32(&device_of(x)?, y, &[d[0], d[1], d[2] * sy, d[3] * sx]))
}

/// The gradient of `upsample_nearest2d` for an input of shape `x_dims` from `g`.
pub(crate) fn upsample_nearest2d_backward(g: &Tensor, x_dims: &[usize], sy: usize, sx: usize) -> Result<Tensor> {
    const OP: &str = "upsample_nearest2d backward";
    let d = [x_dims[0], x_dims[1], x_dims[2], x_dims[3]];
    let gx = with_f32(g, OP, |dev, gb| dev.upsample_nearest_backward(gb, d, sy, sx))?;
    Ok(from_f32(&device_of(g)?, gx, x_dims))
}

/// `repeat_interleave` of the CUDA tensor `x` viewed as `[outer, n, inner]` (the axis is `n`),
/// into `shape`: nearest upsampling of the planes `[n, inner]` by `(repeats, 1)`.
pub(crate) fn repeat_interleave(
    x: &Tensor,
    [outer, n, inner]: [usize; 3],
    repeats: usize,
    shape: &[usize],
) -> Result<Tensor> {
    const OP: &str = "repeat_interleave";
    f32_only(x, OP)?;
    let y = with_f32(x, OP, |dev, xb| dev.upsample_nearest_forward(xb, [1, outer, n, inner], repeats, 1))?;
    Ok(from_f32(&device_of(x)?, y, shape))
}

/// The gradient of `repeat_interleave` for an input of shape `x_dims` (`[outer, n, inner]`
/// around the repeated axis) from `g`.
pub(crate) fn repeat_interleave_backward(
    g: &Tensor,
    x_dims: &[usize],
    [outer, n, inner]: [usize; 3],
    repeats: usize,
) -> Result<Tensor> {
    const OP: &str = "repeat_interleave backward";
    let gx = with_f32(g, OP, |dev, gb| dev.upsample_nearest_backward(gb, [1, outer, n, inner], repeats, 1))?;
    Ok(from_f32(&device_of(g)?, gx, x_dims))
}

//! 2-D convolution (NCHW), transposed convolution, and their parameters. Both check shapes here
//! and run on `cpu::conv` (transposed: `cpu::conv_transpose`); backward of each is the other's
//! forward plus the shared weight gradient.

/// Geometry of a 2-D convolution (PyTorch `Conv2d` semantics). Index 0 is height, 1 is width.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2dParams {
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
}

impl Conv2dParams {
    /// Square stride and padding, dilation 1, one group.
    pub fn new(stride: usize, padding: usize) -> Self {
        Conv2dParams { stride: [stride; 2], padding: [padding; 2], dilation: [1; 2], groups: 1 }
    }
    pub fn with_dilation(mut self, d: usize) -> Self {
        self.dilation = [d; 2];
        self
    }
    pub fn with_groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
    /// Output extent along axis `a` for input extent `n` and kernel extent `k`, or `None` when
    /// the kernel does not fit.
    pub fn out_size(&self, a: usize, n: usize, k: usize) -> Option<usize> {
        let span = self.dilation[a] * (k - 1) + 1;
        (n + 2 * self.padding[a]).checked_sub(span).map(|v| v / self.stride[a] + 1)
    }
}

/// Geometry of a 2-D transposed convolution (PyTorch `ConvTranspose2d` semantics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvTranspose2dParams {
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub output_padding: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
}

impl ConvTranspose2dParams {
    pub fn new(stride: usize, padding: usize) -> Self {
        ConvTranspose2dParams {
            stride: [stride; 2],
            padding: [padding; 2],
            output_padding: [0; 2],
            dilation: [1; 2],
            groups: 1,
        }
    }
    /// `(n - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1`.
    pub fn out_size(&self, a: usize, n: usize, k: usize) -> Option<usize> {
        ((n - 1) * self.stride[a] + self.dilation[a] * (k - 1) + self.output_padding[a] + 1)
            .checked_sub(2 * self.padding[a])
    }
}

// ------------------------------------------------------------------ ops

use crate::autograd::Op;
use crate::cpu::conv::{channel_sum, conv2d_backward_input, conv2d_backward_weight, conv2d_forward, ConvGeom};
use crate::cpu::conv_transpose::conv_transpose2d_forward;
use crate::{shape_err, with_float, Error, Float, Result, Tensor};

/// Checks dtype/device agreement of the conv operands.
fn check_operands(op: &'static str, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<()> {
    for t in std::iter::once(w).chain(b) {
        if t.dtype() != x.dtype() {
            return Err(Error::DTypeMismatch { op, lhs: x.dtype(), rhs: t.dtype() });
        }
        if t.device() != x.device() {
            return Err(Error::DeviceMismatch { op, lhs: x.device(), rhs: t.device() });
        }
    }
    if !x.device().is_cpu() && x.dtype() != crate::DType::F32 {
        return Err(Error::UnsupportedDType { op, dtype: x.dtype() });
    }
    if x.rank() != 4 || w.rank() != 4 {
        return shape_err(op, format!("input and weight must be 4-D, got {:?} and {:?}", x.dims(), w.dims()));
    }
    Ok(())
}

fn check_bias(op: &'static str, b: Option<&Tensor>, c: usize) -> Result<()> {
    match b {
        Some(b) if b.dims() != [c] => shape_err(op, format!("bias must be [{c}], got {:?}", b.dims())),
        _ => Ok(()),
    }
}

fn check_geometry(op: &'static str, stride: [usize; 2], dilation: [usize; 2], groups: usize) -> Result<()> {
    if stride.contains(&0) || dilation.contains(&0) || groups == 0 {
        return shape_err(op, format!("stride {stride:?}, dilation {dilation:?} and groups {groups} must be >= 1"));
    }
    Ok(())
}

/// Bias gradient of a (transposed) conv: `grad_out` `[n, c, spatial]` summed over n and spatial,
/// or `None` when the bias takes no gradient.
fn bias_grad<T: Float>(b: &Tensor, go: &Tensor, n: usize, c: usize, spatial: usize) -> Result<Option<Tensor>> {
    if !b.requires_grad() {
        return Ok(None);
    }
    let v = go.with_slice::<T, _>(|gv| channel_sum(gv, n, c, spatial))?;
    Ok(Some(Tensor::from_vec(v, b.dims())?))
}

/// Runs `f` on the row-major data of up to three tensors of dtype `T`.
fn with3<T: Float, R>(
    a: &Tensor,
    b: &Tensor,
    c: Option<&Tensor>,
    f: impl FnOnce(&[T], &[T], Option<&[T]>) -> R,
) -> Result<R> {
    a.with_slice::<T, _>(|av| {
        b.with_slice::<T, _>(|bv| match c {
            Some(c) => c.with_slice::<T, _>(|cv| f(av, bv, Some(cv))),
            None => Ok(f(av, bv, None)),
        })
    })?
    .and_then(|r| r)
}

struct Conv2dOp {
    geom: ConvGeom,
}

impl Op for Conv2dOp {
    fn name(&self) -> &'static str {
        "conv2d"
    }
    fn backward(&self, inputs: &[Tensor], _: &Tensor, go: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (x, w, g) = (&inputs[0], &inputs[1], &self.geom);
        if !x.device().is_cpu() {
            return crate::cuda::ops::conv2d_backward(inputs, go, g);
        }
        with_float!(x.dtype(), "conv2d backward", |T| {
            let gx = if x.requires_grad() {
                let v = with3::<T, _>(go, w, None, |gv, wv, _| conv2d_backward_input(gv, wv, g))?;
                Some(Tensor::from_vec(v, x.dims())?)
            } else {
                None
            };
            let gw = if w.requires_grad() {
                let v = with3::<T, _>(x, go, None, |xv, gv, _| conv2d_backward_weight(xv, gv, g))?;
                Some(Tensor::from_vec(v, w.dims())?)
            } else {
                None
            };
            let mut grads = vec![gx, gw];
            if let Some(b) = inputs.get(2) {
                grads.push(bias_grad::<T>(b, go, g.n, g.cout, g.l())?);
            }
            Ok(grads)
        })
    }
}

struct ConvTranspose2dOp {
    /// The conv2d whose input-gradient this transposed conv is (its input is our output).
    geom: ConvGeom,
}

impl Op for ConvTranspose2dOp {
    fn name(&self) -> &'static str {
        "conv_transpose2d"
    }
    fn backward(&self, inputs: &[Tensor], _: &Tensor, go: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (x, w, g) = (&inputs[0], &inputs[1], &self.geom);
        if !x.device().is_cpu() {
            return crate::cuda::ops::conv_transpose2d_backward(inputs, go, g);
        }
        with_float!(x.dtype(), "conv_transpose2d backward", |T| {
            // y = conv2d_input_grad(x): its adjoint is the forward conv, and the weight gradient
            // is conv2d's weight gradient with the roles of input and output swapped.
            let gx = if x.requires_grad() {
                let v = with3::<T, _>(go, w, None, |gv, wv, _| conv2d_forward(gv, wv, None, g))?;
                Some(Tensor::from_vec(v, x.dims())?)
            } else {
                None
            };
            let gw = if w.requires_grad() {
                let v = with3::<T, _>(go, x, None, |gv, xv, _| conv2d_backward_weight(gv, xv, g))?;
                Some(Tensor::from_vec(v, w.dims())?)
            } else {
                None
            };
            let mut grads = vec![gx, gw];
            if let Some(b) = inputs.get(2) {
                grads.push(bias_grad::<T>(b, go, g.n, g.cin, g.h * g.w)?);
            }
            Ok(grads)
        })
    }
}

impl Tensor {
    /// 2-D convolution (PyTorch `conv2d`): input `[N, Cin, H, W]`, weight
    /// `[Cout, Cin/groups, kh, kw]`, optional bias `[Cout]`; output `[N, Cout, oh, ow]`.
    pub fn conv2d(&self, w: &Tensor, b: Option<&Tensor>, p: Conv2dParams) -> Result<Tensor> {
        const OP: &str = "conv2d";
        let x = self;
        check_operands(OP, x, w, b)?;
        check_geometry(OP, p.stride, p.dilation, p.groups)?;
        let (xd, wd) = (x.dims(), w.dims());
        let (n, cin, h, wi) = (xd[0], xd[1], xd[2], xd[3]);
        let (cout, cin_g, kh, kw) = (wd[0], wd[1], wd[2], wd[3]);
        if cin % p.groups != 0 || cout % p.groups != 0 || cin_g * p.groups != cin || kh == 0 || kw == 0 {
            return shape_err(
                OP,
                format!("input {xd:?} and weight {wd:?} do not fit groups {} (need weight [Cout, Cin/groups, kh, kw] with groups dividing Cin and Cout)", p.groups),
            );
        }
        check_bias(OP, b, cout)?;
        let (Some(oh), Some(ow)) = (p.out_size(0, h, kh), p.out_size(1, wi, kw)) else {
            return shape_err(
                OP,
                format!(
                    "kernel {kh}x{kw} (dilation {:?}) does not fit input {xd:?} with padding {:?}",
                    p.dilation, p.padding
                ),
            );
        };
        let geom = ConvGeom {
            n,
            cin,
            h,
            w: wi,
            cout,
            kh,
            kw,
            oh,
            ow,
            stride: p.stride,
            pad: p.padding,
            dil: p.dilation,
            groups: p.groups,
        };
        let out = if !x.device().is_cpu() {
            crate::cuda::ops::conv2d(x, w, b, &geom)?
        } else {
            with_float!(x.dtype(), OP, |T| {
                let v = with3::<T, _>(x, w, b, |xv, wv, bv| conv2d_forward(xv, wv, bv, &geom))?;
                Tensor::from_vec(v, &[n, cout, oh, ow])
            })?
        };
        let mut inputs = vec![x.clone(), w.clone()];
        inputs.extend(b.cloned());
        Ok(out.attach_op(inputs, Conv2dOp { geom }))
    }

    /// 2-D transposed convolution (PyTorch `conv_transpose2d`): input `[N, Cin, H, W]`, weight
    /// `[Cin, Cout/groups, kh, kw]`, optional bias `[Cout]`. Never a convolution over a
    /// zero-stuffed input: f32 ones on large maps with the kernel a multiple of the stride run
    /// by sub-pixel decomposition (the stride-phase convolutions, e.g. four 2x2 convs for
    /// 4x4/s2, as one GEMM over a shared im2col, then a pixel shuffle; see
    /// `cpu::conv_transpose`); the rest run as conv2d's input gradient (at stride 1 a
    /// flipped-kernel forward conv, otherwise GEMM then col2im), which measured faster there.
    pub fn conv_transpose2d(&self, w: &Tensor, b: Option<&Tensor>, p: ConvTranspose2dParams) -> Result<Tensor> {
        const OP: &str = "conv_transpose2d";
        let x = self;
        check_operands(OP, x, w, b)?;
        check_geometry(OP, p.stride, p.dilation, p.groups)?;
        let (xd, wd) = (x.dims(), w.dims());
        let (n, cin, h, wi) = (xd[0], xd[1], xd[2], xd[3]);
        let (wcin, cout_g, kh, kw) = (wd[0], wd[1], wd[2], wd[3]);
        let cout = cout_g * p.groups;
        if wcin != cin || cin % p.groups != 0 || kh == 0 || kw == 0 || h == 0 || wi == 0 {
            return shape_err(
                OP,
                format!(
                    "input {xd:?} and weight {wd:?} do not fit groups {} (need weight [Cin, Cout/groups, kh, kw])",
                    p.groups
                ),
            );
        }
        for a in 0..2 {
            if p.output_padding[a] >= p.stride[a].max(p.dilation[a]) {
                return shape_err(
                    OP,
                    format!(
                        "output_padding {:?} must be smaller than stride {:?} or dilation {:?}",
                        p.output_padding, p.stride, p.dilation
                    ),
                );
            }
        }
        check_bias(OP, b, cout)?;
        let (Some(oh), Some(ow)) = (p.out_size(0, h, kh), p.out_size(1, wi, kw)) else {
            return shape_err(
                OP,
                format!("padding {:?} is too large for input {xd:?} and kernel {kh}x{kw}", p.padding),
            );
        };
        // The conv2d that maps our output shape back to our input shape.
        let cp = Conv2dParams { stride: p.stride, padding: p.padding, dilation: p.dilation, groups: p.groups };
        if oh == 0 || ow == 0 || cp.out_size(0, oh, kh) != Some(h) || cp.out_size(1, ow, kw) != Some(wi) {
            return shape_err(
                OP,
                format!("output {oh}x{ow} for input {xd:?} is not invertible by the matching conv2d"),
            );
        }
        let geom = ConvGeom {
            n,
            cin: cout,
            h: oh,
            w: ow,
            cout: cin,
            kh,
            kw,
            oh: h,
            ow: wi,
            stride: p.stride,
            pad: p.padding,
            dil: p.dilation,
            groups: p.groups,
        };
        let out = if !x.device().is_cpu() {
            crate::cuda::ops::conv_transpose2d(x, w, b, &geom)?
        } else {
            with_float!(x.dtype(), OP, |T| {
                let v = with3::<T, _>(x, w, b, |xv, wv, bv| conv_transpose2d_forward(xv, wv, bv, &geom))?;
                Tensor::from_vec(v, &[n, cout, oh, ow])
            })?
        };
        let mut inputs = vec![x.clone(), w.clone()];
        inputs.extend(b.cloned());
        Ok(out.attach_op(inputs, ConvTranspose2dOp { geom }))
    }
}

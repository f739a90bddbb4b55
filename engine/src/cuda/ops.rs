//! CUDA forms of the engine's tensor ops. Each function takes the op's checked operands and
//! returns the output tensor; `ops/*.rs` keeps the shape logic and autograd and calls these
//! when the operands live on a CUDA device.

use super::elementwise::{Bcast, Binary, Unary, MAX_DIMS};
use super::launch::int;
use super::tensor::{device_of, f32_only, from_f32, with_f32};
use super::GemmShape;
use crate::cpu::conv::ConvGeom;
use crate::layout::Layout;
use crate::{Error, Result, Tensor};
use cudarc::driver::CudaSlice;

/// `a op b` over the broadcast `shape`, reading both operands through their expanded layouts
/// (`dims`, `sa`, `sb`: the merged walk of `ops::binary::coalesce`).
pub(crate) fn binary(
    op: Binary,
    name: &'static str,
    a: &Tensor,
    b: &Tensor,
    (la, lb): (&Layout, &Layout),
    (dims, sa, sb): (&[usize], &[usize], &[usize]),
    shape: &[usize],
) -> Result<Tensor> {
    f32_only(a, name)?;
    let dev = device_of(a)?;
    let n: usize = shape.iter().product();
    let guard_a = a.storage();
    let guard_b = if a.same_storage(b) { None } else { Some(b.storage()) };
    let ba = guard_a.cuda(name)?.as_f32(name)?;
    let bb = match &guard_b {
        Some(g) => g.cuda(name)?.as_f32(name)?,
        None => ba,
    };
    let plain = |l: &Layout| l.is_compact() && l.shape == shape;
    let y = if plain(la) && plain(lb) {
        dev.binary(op, ba, bb, n)?
    } else {
        if dims.len() > MAX_DIMS {
            return Err(Error::Msg(format!(
                "{name}: broadcast over {} dims is beyond the CUDA kernels' {MAX_DIMS}",
                dims.len()
            )));
        }
        let mut s = Bcast {
            ndim: dims.len() as i32,
            oa: int(la.offset, name)?,
            ob: int(lb.offset, name)?,
            ..Default::default()
        };
        for i in 0..dims.len() {
            s.dims[i] = int(dims[i], name)?;
            s.sa[i] = int(sa[i], name)?;
            s.sb[i] = int(sb[i], name)?;
        }
        dev.binary_broadcast(op, ba, bb, s, n)?
    };
    Ok(from_f32(&dev, y, shape))
}

/// `f(x)` for the unary kinds with a kernel (`affine` when `affine` is given).
pub(crate) fn unary(x: &Tensor, op: Option<Unary>, affine: Option<(f64, f64)>, name: &'static str) -> Result<Tensor> {
    f32_only(x, name)?;
    let n = x.numel();
    let y = with_f32(x, name, |dev, buf| match (op, affine) {
        (Some(u), _) => dev.unary(u, buf, n),
        (None, Some((a, b))) => dev.affine(buf, a as f32, b as f32, n),
        (None, None) => Err(Error::Msg(format!("{name} has no CUDA kernel yet"))),
    })?;
    Ok(from_f32(&device_of(x)?, y, x.dims()))
}

/// `g * f'(x)` for the activations with a fused gradient kernel.
pub(crate) fn unary_backward(op: Unary, x: &Tensor, g: &Tensor) -> Result<Tensor> {
    let n = x.numel();
    let gx = with_f32(x, "unary backward", |dev, xb| {
        with_f32(g, "unary backward", |_, gb| dev.unary_backward(op, xb, gb, n))
    })?;
    Ok(from_f32(&device_of(x)?, gx, x.dims()))
}

/// Row sums (or maxima) of `rows` viewed as `[outer, inner]`.
pub(crate) fn reduce_rows(rows: &Tensor, outer: usize, inner: usize, max: bool, out_shape: &[usize]) -> Result<Tensor> {
    f32_only(rows, "sum")?;
    let y = with_f32(rows, "sum", |dev, buf| dev.reduce_axis(buf, outer, inner, 1, max))?;
    Ok(from_f32(&device_of(rows)?, y, out_shape))
}

/// `sum x^2` of a CUDA tensor, read back as f64 (one synchronisation).
pub(crate) fn sum_of_squares(x: &Tensor) -> Result<f64> {
    f32_only(x, "sum_of_squares")?;
    let n = x.numel();
    let s = with_f32(x, "sum_of_squares", |dev, b| {
        let s = dev.sum_of_squares(b, n)?;
        dev.download(&s, 1)
    })?;
    Ok(s[0] as f64)
}

/// `[batch.., m, k] x [batch.., k, n]` on the f32 GEMM, operands already broadcast to `batch`.
/// Each operand is made contiguous per matrix (a transposed matrix is read as `t` instead).
pub(crate) fn matmul(a: &Tensor, b: &Tensor, batch: &[usize], m: usize, k: usize, n: usize) -> Result<Tensor> {
    f32_only(a, "matmul")?;
    let nb: usize = batch.iter().product();
    // A matrix stored transposed (a `.t()` view) is read with the GEMM's transpose flag
    // instead of being copied.
    let operand = |t: &Tensor, rows: usize, cols: usize| -> Result<(Tensor, bool)> {
        let e = t.detach().expand(&[batch, &[rows, cols]].concat())?;
        let swapped = e.transpose(-2, -1)?;
        if e.is_contiguous() {
            Ok((e, false))
        } else if swapped.is_contiguous() {
            Ok((swapped, true))
        } else {
            Ok((e.contiguous()?, false))
        }
    };
    let (ca, ta) = operand(a, m, k)?;
    let (cb, tb) = operand(b, k, n)?;
    let s = GemmShape { batch: nb, ..GemmShape::plain(m, n, k, ta, tb) };
    let dev = device_of(a)?;
    let mut c = dev.alloc::<f32>(nb * m * n)?;
    with_f32(&ca, "matmul", |dev, x| {
        with_f32(&cb, "matmul", |_, y| dev.gemm(&s, 1.0, &x.slice(..), &y.slice(..), 0.0, &mut c.slice_mut(..)))
    })?;
    let mut shape = batch.to_vec();
    shape.extend([m, n]);
    Ok(from_f32(&dev, c, &shape))
}

/// Runs `f` on the f32 buffers of `x`, `w` and, when given, `b`.
fn with3(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    op: &'static str,
    f: impl FnOnce(
        &std::sync::Arc<super::CudaDevice>,
        &CudaSlice<f32>,
        &CudaSlice<f32>,
        Option<&CudaSlice<f32>>,
    ) -> Result<CudaSlice<f32>>,
) -> Result<CudaSlice<f32>> {
    with_f32(x, op, |dev, xb| {
        with_f32(w, op, |_, wb| match b {
            Some(b) => with_f32(b, op, |_, bb| f(dev, xb, wb, Some(bb))),
            None => f(dev, xb, wb, None),
        })
    })
}

/// conv2d forward: `[n, cout, oh, ow]`.
pub(crate) fn conv2d(x: &Tensor, w: &Tensor, b: Option<&Tensor>, g: &ConvGeom) -> Result<Tensor> {
    f32_only(x, "conv2d")?;
    let y = with3(x, w, b, "conv2d", |dev, xb, wb, bb| dev.conv2d_forward(xb, wb, bb, g))?;
    Ok(from_f32(&device_of(x)?, y, &[g.n, g.cout, g.oh, g.ow]))
}

/// Gradients of conv2d's input, weight and bias (each only when it requires grad).
pub(crate) fn conv2d_backward(inputs: &[Tensor], go: &Tensor, g: &ConvGeom) -> Result<Vec<Option<Tensor>>> {
    let (x, w) = (&inputs[0], &inputs[1]);
    let dev = device_of(x)?;
    let gx = match x.requires_grad() {
        true => Some(from_f32(
            &dev,
            with3(go, w, None, "conv2d backward", |d, gb, wb, _| d.conv2d_backward_input(gb, wb, g))?,
            x.dims(),
        )),
        false => None,
    };
    let gw = match w.requires_grad() {
        true => Some(from_f32(
            &dev,
            with3(x, go, None, "conv2d backward", |d, xb, gb, _| d.conv2d_backward_weight(xb, gb, g))?,
            w.dims(),
        )),
        false => None,
    };
    let mut grads = vec![gx, gw];
    if let Some(b) = inputs.get(2) {
        grads.push(bias_grad(b, go, g.n, g.cout, g.l())?);
    }
    Ok(grads)
}

fn bias_grad(b: &Tensor, go: &Tensor, n: usize, c: usize, hw: usize) -> Result<Option<Tensor>> {
    if !b.requires_grad() {
        return Ok(None);
    }
    let s = with_f32(go, "bias gradient", |dev, gb| dev.channel_sum(gb, n, c, hw))?;
    Ok(Some(from_f32(&device_of(go)?, s, b.dims())))
}

/// conv_transpose2d forward: the input gradient of the conv2d `g` (whose output is our input),
/// plus the bias over `g.cin` channels.
pub(crate) fn conv_transpose2d(x: &Tensor, w: &Tensor, b: Option<&Tensor>, g: &ConvGeom) -> Result<Tensor> {
    f32_only(x, "conv_transpose2d")?;
    let y = with3(x, w, b, "conv_transpose2d", |dev, xb, wb, bb| {
        let mut y = dev.conv2d_backward_input(xb, wb, g)?;
        if let Some(bb) = bb {
            dev.bias_add(&mut y, bb, g.n, g.cin, g.h * g.w)?;
        }
        Ok(y)
    })?;
    Ok(from_f32(&device_of(x)?, y, &[g.n, g.cin, g.h, g.w]))
}

/// Gradients of conv_transpose2d: the input's is conv2d forward, the weight's is conv2d's weight
/// gradient with input and output swapped.
pub(crate) fn conv_transpose2d_backward(inputs: &[Tensor], go: &Tensor, g: &ConvGeom) -> Result<Vec<Option<Tensor>>> {
    let (x, w) = (&inputs[0], &inputs[1]);
    let dev = device_of(x)?;
    let gx = match x.requires_grad() {
        true => Some(from_f32(
            &dev,
            with3(go, w, None, "conv_transpose2d backward", |d, gb, wb, _| d.conv2d_forward(gb, wb, None, g))?,
            x.dims(),
        )),
        false => None,
    };
    let gw = match w.requires_grad() {
        true => Some(from_f32(
            &dev,
            with3(go, x, None, "conv_transpose2d backward", |d, gb, xb, _| d.conv2d_backward_weight(gb, xb, g))?,
            w.dims(),
        )),
        false => None,
    };
    let mut grads = vec![gx, gw];
    if let Some(b) = inputs.get(2) {
        grads.push(bias_grad(b, go, g.n, g.cin, g.h * g.w)?);
    }
    Ok(grads)
}

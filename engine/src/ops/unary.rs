//! Elementwise unary ops. Each kind has its forward formula and its derivative; backward is
//! `grad * f'(x)` computed by one kernel from the saved input (and output where cheaper).

use crate::autograd::Op;
use crate::ops::binary::PAR_THRESHOLD;
use crate::storage::Storage;
use crate::{with_float, Float, Result, Tensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum UnaryKind {
    /// `a * x + b`
    Affine(f64, f64),
    Exp,
    Log,
    Sqrt,
    Rsqrt,
    /// `x ^ p`
    Pow(f64),
    Abs,
    /// Clamp to [lo, hi]; gradient 1 strictly inside, 0 outside, 1 on the bounds (as PyTorch).
    Clamp(f64, f64),
    Relu,
    Relu6,
    /// Exact (erf) GELU, as PyTorch's default.
    Gelu,
    Sigmoid,
    Tanh,
}

impl UnaryKind {
    fn name(self) -> &'static str {
        match self {
            UnaryKind::Affine(..) => "affine",
            UnaryKind::Exp => "exp",
            UnaryKind::Log => "log",
            UnaryKind::Sqrt => "sqrt",
            UnaryKind::Rsqrt => "rsqrt",
            UnaryKind::Pow(_) => "pow",
            UnaryKind::Abs => "abs",
            UnaryKind::Clamp(..) => "clamp",
            UnaryKind::Relu => "relu",
            UnaryKind::Relu6 => "relu6",
            UnaryKind::Gelu => "gelu",
            UnaryKind::Sigmoid => "sigmoid",
            UnaryKind::Tanh => "tanh",
        }
    }

    /// The CUDA kernel of this kind, if it has one.
    fn cuda(self) -> Option<crate::cuda::Unary> {
        use crate::cuda::Unary;
        Some(match self {
            UnaryKind::Exp => Unary::Exp,
            UnaryKind::Log => Unary::Log,
            UnaryKind::Sqrt => Unary::Sqrt,
            UnaryKind::Rsqrt => Unary::Rsqrt,
            UnaryKind::Abs => Unary::Abs,
            UnaryKind::Relu => Unary::Relu,
            UnaryKind::Relu6 => Unary::Relu6,
            UnaryKind::Gelu => Unary::Gelu,
            UnaryKind::Sigmoid => Unary::Sigmoid,
            UnaryKind::Tanh => Unary::Tanh,
            UnaryKind::Pow(2.0) => Unary::Sqr,
            UnaryKind::Affine(..) | UnaryKind::Pow(_) | UnaryKind::Clamp(..) => return None,
        })
    }

    #[inline(always)]
    fn forward<T: Float>(self, x: T) -> T {
        match self {
            UnaryKind::Affine(a, b) => x * T::from_f64(a) + T::from_f64(b),
            UnaryKind::Exp => x.exp(),
            UnaryKind::Log => x.ln(),
            UnaryKind::Sqrt => x.sqrt(),
            UnaryKind::Rsqrt => T::ONE / x.sqrt(),
            UnaryKind::Pow(p) => x.powf(T::from_f64(p)),
            UnaryKind::Abs => x.abs(),
            UnaryKind::Clamp(lo, hi) => x.max(T::from_f64(lo)).min(T::from_f64(hi)),
            UnaryKind::Relu => x.max(T::ZERO),
            UnaryKind::Relu6 => x.max(T::ZERO).min(T::from_f64(6.0)),
            UnaryKind::Gelu => {
                let xf = x.to_f64();
                T::from_f64(0.5 * xf * (1.0 + erf(xf * std::f64::consts::FRAC_1_SQRT_2)))
            }
            UnaryKind::Sigmoid => T::ONE / (T::ONE + (-x).exp()),
            UnaryKind::Tanh => x.tanh(),
        }
    }

    /// d f / d x at input `x` with output `y`.
    #[inline(always)]
    fn derivative<T: Float>(self, x: T, y: T) -> T {
        match self {
            UnaryKind::Affine(a, _) => T::from_f64(a),
            UnaryKind::Exp => y,
            UnaryKind::Log => T::ONE / x,
            UnaryKind::Sqrt => T::from_f64(0.5) / y,
            UnaryKind::Rsqrt => T::from_f64(-0.5) * y * y * y,
            UnaryKind::Pow(p) => T::from_f64(p) * x.powf(T::from_f64(p - 1.0)),
            UnaryKind::Abs => {
                if x > T::ZERO {
                    T::ONE
                } else if x < T::ZERO {
                    -T::ONE
                } else {
                    T::ZERO
                }
            }
            UnaryKind::Clamp(lo, hi) => {
                let xf = x.to_f64();
                if xf >= lo && xf <= hi {
                    T::ONE
                } else {
                    T::ZERO
                }
            }
            UnaryKind::Relu => {
                if x > T::ZERO {
                    T::ONE
                } else {
                    T::ZERO
                }
            }
            UnaryKind::Relu6 => {
                // `&` rather than `&&`: no branch, so the loop vectorises.
                if (x > T::ZERO) & (x < T::from_f64(6.0)) {
                    T::ONE
                } else {
                    T::ZERO
                }
            }
            UnaryKind::Gelu => {
                let xf = x.to_f64();
                let cdf = 0.5 * (1.0 + erf(xf * std::f64::consts::FRAC_1_SQRT_2));
                let pdf = (-0.5 * xf * xf).exp() / (2.0 * std::f64::consts::PI).sqrt();
                T::from_f64(cdf + xf * pdf)
            }
            UnaryKind::Sigmoid => y * (T::ONE - y),
            UnaryKind::Tanh => T::ONE - y * y,
        }
    }
}

/// erf to ~1e-16 relative in f64: a positive-term series below |x| = 3 (no cancellation),
/// a continued fraction for erfc above. Enough for f32 and f64 GELU.
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let ax = x.abs();
    let r = if ax < 3.0 {
        // erf(x) = 2/sqrt(pi) * exp(-x^2) * sum_n (2x^2)^n x / (1*3*...*(2n+1))
        let x2 = ax * ax;
        let mut term = ax;
        let mut sum = ax;
        let mut n = 0.0;
        while term > 1e-17 * sum {
            n += 1.0;
            term *= 2.0 * x2 / (2.0 * n + 1.0);
            sum += term;
        }
        2.0 / std::f64::consts::PI.sqrt() * (-x2).exp() * sum
    } else {
        1.0 - erfc_pos(ax)
    };
    if x < 0.0 {
        -r
    } else {
        r
    }
}

/// erfc for x >= 3 by a continued fraction (Lentz), accurate to ~1e-16.
fn erfc_pos(x: f64) -> f64 {
    if x > 27.0 {
        return 0.0;
    }
    // erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + 1/2/(x + 1/(x + 3/2/(x + ...))))
    let tiny = 1e-300;
    let mut f = x;
    let mut c = x;
    let mut d = 0.0;
    for n in 1..300 {
        let an = n as f64 * 0.5;
        d = x + an * d;
        if d.abs() < tiny {
            d = tiny;
        }
        c = x + an / c;
        if c.abs() < tiny {
            c = tiny;
        }
        d = 1.0 / d;
        let delta = c * d;
        f *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    (-x * x).exp() / (f * std::f64::consts::PI.sqrt())
}

/// Elements per parallel task of the elementwise loops.
const CHUNK: usize = 1 << 14;

/// Calls `$body` with `$k` bound to `$kind`. For ReLU and ReLU6 (the activations of every model
/// here) `$k` is a `const`, so the closures in `$body` see a constant instead of capturing a
/// value, `forward` / `derivative` lose their per-element `match` and the loops vectorise.
macro_rules! specialise {
    ($kind:expr, |$k:ident| $body:expr) => {
        match $kind {
            UnaryKind::Relu => {
                #[allow(non_upper_case_globals)]
                const $k: UnaryKind = UnaryKind::Relu;
                $body
            }
            UnaryKind::Relu6 => {
                #[allow(non_upper_case_globals)]
                const $k: UnaryKind = UnaryKind::Relu6;
                $body
            }
            other => {
                let $k = other;
                $body
            }
        }
    };
}

/// A fresh vector of `n` elements whose chunks `f(start, dst)` writes (no zero-fill first), in
/// parallel when large.
///
/// # Safety
/// `f(start, dst)` must initialise every element of `dst` (the elements `start..start +
/// dst.len()` of the result) before it returns; the vector is assumed initialised afterwards.
unsafe fn fill_chunks<T: Float>(n: usize, f: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(n);
    let spare = &mut out.spare_capacity_mut()[..n];
    if n >= PAR_THRESHOLD {
        spare.par_chunks_mut(CHUNK).enumerate().for_each(|(c, dst)| f(c * CHUNK, dst));
    } else {
        spare.chunks_mut(CHUNK).enumerate().for_each(|(c, dst)| f(c * CHUNK, dst));
    }
    // SAFETY: the chunks cover `..n` and `f` initialised every element of each (the caller's
    // contract); capacity is n.
    unsafe { out.set_len(n) };
    out
}

/// `f(x)` elementwise.
fn map<T: Float>(x: &[T], f: impl Fn(T) -> T + Sync) -> Vec<T> {
    let fill = |start: usize, dst: &mut [MaybeUninit<T>]| {
        let n = dst.len();
        let x = &x[start..start + n];
        for i in 0..n {
            dst[i].write(f(x[i]));
        }
    };
    // SAFETY: `fill` writes every element of `dst` (or panics on a short input).
    unsafe { fill_chunks(x.len(), fill) }
}

/// `f(x, y, g)` elementwise over three equally long slices.
fn map3<T: Float>(x: &[T], y: &[T], g: &[T], f: impl Fn(T, T, T) -> T + Sync) -> Vec<T> {
    assert!(y.len() == x.len() && g.len() == x.len(), "unary backward: operand lengths differ");
    let fill = |start: usize, dst: &mut [MaybeUninit<T>]| {
        // Equal-length re-slices let the compiler drop the bounds checks and vectorise.
        let n = dst.len();
        let (x, y, g) = (&x[start..start + n], &y[start..start + n], &g[start..start + n]);
        for i in 0..n {
            dst[i].write(f(x[i], y[i], g[i]));
        }
    };
    // SAFETY: `fill` writes every element of `dst` (or panics on a short input).
    unsafe { fill_chunks(x.len(), fill) }
}

struct UnaryOp {
    kind: UnaryKind,
}

impl Op for UnaryOp {
    fn name(&self) -> &'static str {
        self.kind.name()
    }
    fn backward(&self, inputs: &[Tensor], out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let x = &inputs[0];
        if !x.device().is_cpu() {
            return Ok(vec![Some(cuda_backward(self.kind, x, out, g)?)]);
        }
        let grad = with_float!(x.dtype(), self.kind.name(), |T| {
            let v: Vec<T> = x.with_slice(|xs: &[T]| {
                out.with_slice(|ys: &[T]| {
                    g.with_slice(|gs: &[T]| {
                        match self.kind {
                            // Scalings: the derivative is the constant `a`.
                            UnaryKind::Affine(a, _) => {
                                let a = T::from_f64(a);
                                map(gs, |g| g * a)
                            }
                            kind => specialise!(kind, |k| map3(xs, ys, gs, |x, y, g| g * k.derivative(x, y))),
                        }
                    })
                })
            })???;
            Tensor::from_vec(v, x.dims())
        })?;
        Ok(vec![Some(grad)])
    }
}

/// `g * f'(x)` on a CUDA device: a fused kernel for the activations, tensor ops for the rest.
fn cuda_backward(kind: UnaryKind, x: &Tensor, y: &Tensor, g: &Tensor) -> Result<Tensor> {
    use crate::cuda::Unary;
    let (x, y, g) = (x.detach(), y.detach(), g.detach());
    match kind {
        UnaryKind::Affine(a, _) => g.mul_scalar(a),
        UnaryKind::Exp => g.mul(&y),
        UnaryKind::Log => g.div(&x),
        UnaryKind::Sqrt => g.div(&y)?.mul_scalar(0.5),
        UnaryKind::Rsqrt => g.mul(&y.sqr()?.mul(&y)?)?.mul_scalar(-0.5),
        UnaryKind::Pow(2.0) => g.mul(&x)?.mul_scalar(2.0),
        UnaryKind::Relu => crate::cuda::ops::unary_backward(Unary::Relu, &x, &g),
        UnaryKind::Relu6 => crate::cuda::ops::unary_backward(Unary::Relu6, &x, &g),
        UnaryKind::Gelu => crate::cuda::ops::unary_backward(Unary::Gelu, &x, &g),
        UnaryKind::Sigmoid => crate::cuda::ops::unary_backward(Unary::Sigmoid, &x, &g),
        UnaryKind::Tanh => crate::cuda::ops::unary_backward(Unary::Tanh, &x, &g),
        k => Err(crate::Error::Msg(format!("{} backward has no CUDA kernel yet", k.name()))),
    }
}

pub(crate) fn unary(kind: UnaryKind, x: &Tensor) -> Result<Tensor> {
    if !x.device().is_cpu() {
        let affine = if let UnaryKind::Affine(a, b) = kind { Some((a, b)) } else { None };
        let out = crate::cuda::ops::unary(x, kind.cuda(), affine, kind.name())?;
        return Ok(out.attach_op(vec![x.clone()], UnaryOp { kind }));
    }
    let out = with_float!(x.dtype(), kind.name(), |T| {
        x.with_slice(|s: &[T]| {
            let v = match kind {
                UnaryKind::Affine(a, b) => {
                    let (a, b) = (T::from_f64(a), T::from_f64(b));
                    map(s, |v| v * a + b)
                }
                _ => specialise!(kind, |k| map(s, |v| k.forward(v))),
            };
            Storage::Cpu(T::into_storage(v))
        })
    })?;
    Ok(Tensor::from_op(out, x.dims(), vec![x.clone()], UnaryOp { kind }))
}

impl Tensor {
    /// `a * x + b` elementwise.
    pub fn affine(&self, a: f64, b: f64) -> Result<Tensor> {
        unary(UnaryKind::Affine(a, b), self)
    }
    pub fn neg(&self) -> Result<Tensor> {
        self.affine(-1.0, 0.0)
    }
    pub fn exp(&self) -> Result<Tensor> {
        unary(UnaryKind::Exp, self)
    }
    pub fn log(&self) -> Result<Tensor> {
        unary(UnaryKind::Log, self)
    }
    pub fn sqrt(&self) -> Result<Tensor> {
        unary(UnaryKind::Sqrt, self)
    }
    pub fn rsqrt(&self) -> Result<Tensor> {
        unary(UnaryKind::Rsqrt, self)
    }
    pub fn powf(&self, p: f64) -> Result<Tensor> {
        unary(UnaryKind::Pow(p), self)
    }
    pub fn sqr(&self) -> Result<Tensor> {
        self.mul(self)
    }
    pub fn abs(&self) -> Result<Tensor> {
        unary(UnaryKind::Abs, self)
    }
    pub fn clamp(&self, lo: f64, hi: f64) -> Result<Tensor> {
        unary(UnaryKind::Clamp(lo, hi), self)
    }
    pub fn relu(&self) -> Result<Tensor> {
        unary(UnaryKind::Relu, self)
    }
    pub fn relu6(&self) -> Result<Tensor> {
        unary(UnaryKind::Relu6, self)
    }
    pub fn gelu(&self) -> Result<Tensor> {
        unary(UnaryKind::Gelu, self)
    }
    pub fn sigmoid(&self) -> Result<Tensor> {
        unary(UnaryKind::Sigmoid, self)
    }
    pub fn tanh(&self) -> Result<Tensor> {
        unary(UnaryKind::Tanh, self)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn erf_matches_known_values() {
        let cases = [
            (0.0, 0.0),
            (0.1, 0.1124629160182849),
            (0.5, 0.5204998778130465),
            (1.0, 0.8427007929497149),
            (2.0, 0.9953222650189527),
            (-1.5, -0.9661051464753108),
            (4.0, 0.9999999845827421),
        ];
        for (x, e) in cases {
            assert!((super::erf(x) - e).abs() < 1e-14, "erf({x}) = {} vs {e}", super::erf(x));
        }
    }
}

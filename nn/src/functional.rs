//! Dense functional ops used by the layers: the one place where layers reach the engine's
//! kernels, plus SparK's dense-simulated (masked) BatchNorm.

use spark_engine::{no_grad, Conv2dParams, ConvTranspose2dParams, Error, Result, Rng, Tensor};

fn dims4(x: &Tensor, op: &'static str) -> Result<[usize; 4]> {
    match x.dims() {
        &[b, c, h, w] => Ok([b, c, h, w]),
        d => Err(Error::Shape { op, msg: format!("expected a [B, C, H, W] input, got {d:?}") }),
    }
}

/// 2-D convolution, NCHW, weight `[cout, cin/groups, kh, kw]` (PyTorch `F.conv2d`).
pub fn conv2d(x: &Tensor, w: &Tensor, b: Option<&Tensor>, p: Conv2dParams) -> Result<Tensor> {
    x.conv2d(w, b, p)
}

/// Transposed convolution (PyTorch `F.conv_transpose2d`), weight `[cin, cout/groups, kh, kw]`.
pub fn conv_transpose2d(x: &Tensor, w: &Tensor, b: Option<&Tensor>, p: ConvTranspose2dParams) -> Result<Tensor> {
    x.conv_transpose2d(w, b, p)
}

/// Max pooling with implicit -inf padding (PyTorch `F.max_pool2d`).
pub fn max_pool2d(x: &Tensor, k: usize, s: usize, p: usize) -> Result<Tensor> {
    x.max_pool2d(k, s, p)
}

/// Average pooling, zero padding counted in the divisor (PyTorch default).
pub fn avg_pool2d(x: &Tensor, k: usize, s: usize, p: usize) -> Result<Tensor> {
    x.avg_pool2d(k, s, p)
}

/// `[B, C, H, W] -> [B, C]`.
pub fn global_avg_pool2d(x: &Tensor) -> Result<Tensor> {
    x.global_avg_pool2d()
}

/// BatchNorm over `[N, C, *]` (PyTorch `F.batch_norm`): training uses batch statistics and
/// updates the running stats in place (unbiased variance); eval uses the running stats.
pub fn batch_norm(
    x: &Tensor,
    w: Option<&Tensor>,
    b: Option<&Tensor>,
    running: Option<(&Tensor, &Tensor)>,
    training: bool,
    momentum: f64,
    eps: f64,
) -> Result<Tensor> {
    x.batch_norm(w, b, running.map(|r| r.0), running.map(|r| r.1), training, momentum, eps)
}

/// LayerNorm over the last dimension (PyTorch `F.layer_norm(x, (C,))`).
pub fn layer_norm(x: &Tensor, w: Option<&Tensor>, b: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    x.layer_norm(1, w, b, eps)
}

/// LayerNorm over the channels of an NCHW tensor (ConvNeXt's `channels_first` LayerNorm).
pub fn layer_norm_channels_first(x: &Tensor, w: Option<&Tensor>, b: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    x.layer_norm_channels_first(w, b, eps)
}

/// Elementwise dropout (PyTorch `F.dropout`): identity unless training.
pub fn dropout(x: &Tensor, p: f64, training: bool, rng: &mut Rng) -> Result<Tensor> {
    x.dropout(p, training, rng)
}

fn affine(y: Tensor, w: Option<&Tensor>, b: Option<&Tensor>, shape: &[usize]) -> Result<Tensor> {
    let y = match w {
        Some(w) => y.mul(&w.reshape(shape)?)?,
        None => y,
    };
    match b {
        Some(b) => y.add(&b.reshape(shape)?),
        None => Ok(y),
    }
}

/// SparK's dense-simulated BatchNorm: statistics over the sites where `m` (`[B, 1, H, W]`,
/// 0/1) is 1, output multiplied by `m`. Running stats are updated as in `batch_norm` with
/// n = number of visible sites.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_masked(
    x: &Tensor,
    m: &Tensor,
    w: &Tensor,
    b: &Tensor,
    rm: &Tensor,
    rv: &Tensor,
    training: bool,
    momentum: f64,
    eps: f64,
) -> Result<Tensor> {
    let [_, c, _, _] = dims4(x, "batch_norm_masked")?;
    let bshape = [1, c, 1, 1];
    let y = if training {
        let n = m.sum_all()?.to_scalar()?;
        if n < 1.0 {
            return Err(Error::Msg("batch_norm_masked: no visible site".into()));
        }
        let red = [0isize, 2, 3];
        let mean = x.mul(m)?.sum(&red, true)?.div_scalar(n)?;
        let xc = x.sub(&mean)?;
        let var = xc.mul(m)?.sqr()?.sum(&red, true)?.div_scalar(n)?;
        let unbias = if n > 1.0 { n / (n - 1.0) } else { 1.0 };
        no_grad(|| -> Result<()> {
            let nm = rm.mul_scalar(1.0 - momentum)?.add(&mean.reshape(&[c])?.mul_scalar(momentum)?)?;
            let nv = rv.mul_scalar(1.0 - momentum)?.add(&var.reshape(&[c])?.mul_scalar(momentum * unbias)?)?;
            rm.copy_from(&nm)?;
            rv.copy_from(&nv)
        })?;
        xc.mul(&var.add_scalar(eps)?.rsqrt()?)?
    } else {
        x.sub(&rm.reshape(&bshape)?)?.mul(&rv.add_scalar(eps)?.rsqrt()?.reshape(&bshape)?)?
    };
    affine(y, Some(w), Some(b), &bshape)?.mul(m)
}

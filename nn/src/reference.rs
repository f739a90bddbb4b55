//! Reference versions of the dense ops, built only from the engine's differentiable primitives
//! (views, cat, matmul, elementwise, reductions), so their gradients come from autograd. Slow;
//! tests use them to cross-check the fused engine kernels that `functional` calls.

use spark_engine::{no_grad, Conv2dParams, ConvTranspose2dParams, Error, Result, Tensor};

fn dims4(x: &Tensor, op: &'static str) -> Result<[usize; 4]> {
    match x.dims() {
        &[b, c, h, w] => Ok([b, c, h, w]),
        d => Err(Error::Shape { op, msg: format!("expected a [B, C, H, W] input, got {d:?}") }),
    }
}

/// Pads dims 2 and 3 with `value`.
fn pad2d(x: &Tensor, ph: usize, pw: usize, value: f64) -> Result<Tensor> {
    let [b, c, h, w] = dims4(x, "pad2d")?;
    let mut y = x.clone();
    if ph > 0 {
        let z = Tensor::full(value, &[b, c, ph, w], x.dtype(), x.device())?;
        y = Tensor::cat(&[z.clone(), y, z], 2)?;
    }
    if pw > 0 {
        let z = Tensor::full(value, &[b, c, h + 2 * ph, pw], x.dtype(), x.device())?;
        y = Tensor::cat(&[z.clone(), y, z], 3)?;
    }
    Ok(y)
}

/// Elements `start, start+stride, …` (`count` of them) along `dim` (2 or 3 of a 4-D tensor).
fn take_strided(x: &Tensor, dim: usize, start: usize, count: usize, stride: usize) -> Result<Tensor> {
    if stride == 1 {
        return x.narrow(dim as isize, start, count);
    }
    let avail = x.dims()[dim] - start;
    let want = count * stride;
    let mut y = x.narrow(dim as isize, start, avail.min(want))?;
    if avail < want {
        // Only the first element of each stride group is kept; fill the tail group.
        let mut zs = y.shape();
        zs[dim] = want - avail;
        let z = Tensor::zeros(&zs, x.dtype(), x.device())?;
        y = Tensor::cat(&[y, z], dim as isize)?;
    }
    let mut split = y.shape();
    split[dim] = count;
    split.insert(dim + 1, stride);
    let y = y.reshape(&split)?.narrow(dim as isize + 1, 0, 1)?;
    let mut out = x.shape();
    out[dim] = count;
    y.reshape(&out)
}

/// The `kh*kw` shifted, strided windows of `x` (already padded), each `[B, C, oh, ow]`.
fn windows(xp: &Tensor, k: [usize; 2], stride: [usize; 2], dil: [usize; 2], out: [usize; 2]) -> Result<Vec<Tensor>> {
    let mut v = Vec::with_capacity(k[0] * k[1]);
    for i in 0..k[0] {
        let rows = take_strided(xp, 2, i * dil[0], out[0], stride[0])?;
        for j in 0..k[1] {
            v.push(take_strided(&rows, 3, j * dil[1], out[1], stride[1])?);
        }
    }
    Ok(v)
}

fn out_hw(p: &Conv2dParams, h: usize, w: usize, kh: usize, kw: usize, op: &'static str) -> Result<[usize; 2]> {
    match (p.out_size(0, h, kh), p.out_size(1, w, kw)) {
        (Some(a), Some(b)) if a > 0 && b > 0 => Ok([a, b]),
        _ => Err(Error::Shape { op, msg: format!("kernel {kh}x{kw} with {p:?} does not fit a {h}x{w} input") }),
    }
}

/// 2-D convolution, NCHW, weight `[cout, cin/groups, kh, kw]` (PyTorch `F.conv2d`).
pub fn conv2d(x: &Tensor, w: &Tensor, b: Option<&Tensor>, p: Conv2dParams) -> Result<Tensor> {
    let [bs, c, h, wd] = dims4(x, "conv2d")?;
    let [co, cg, kh, kw] = dims4(w, "conv2d")?;
    let g = p.groups.max(1);
    if c != cg * g || co % g != 0 {
        return Err(Error::Shape {
            op: "conv2d",
            msg: format!("input {:?} and weight {:?} do not match groups {g}", x.dims(), w.dims()),
        });
    }
    let [oh, ow] = out_hw(&p, h, wd, kh, kw, "conv2d")?;
    let xp = pad2d(x, p.padding[0], p.padding[1], 0.0)?;
    let wins = windows(&xp, [kh, kw], p.stride, p.dilation, [oh, ow])?;
    let y = if cg == 1 && co == c {
        // Depthwise: a weighted sum of the shifted windows.
        let wf = w.reshape(&[c, kh * kw])?;
        let mut acc: Option<Tensor> = None;
        for (k, win) in wins.iter().enumerate() {
            let wk = wf.narrow(1, k, 1)?.reshape(&[1, c, 1, 1])?;
            let t = win.mul(&wk)?;
            acc = Some(match acc {
                None => t,
                Some(a) => a.add(&t)?,
            });
        }
        acc.ok_or_else(|| Error::Msg("conv2d: empty kernel".into()))?
    } else {
        // im2col per group: cols [B, cg*kh*kw, oh*ow], weight [co/g, cg*kh*kw].
        let cols = Tensor::stack(&wins, 2)?; // [B, C, K, oh, ow]
        let cog = co / g;
        let mut outs = Vec::with_capacity(g);
        for gi in 0..g {
            let cg_cols = cols.narrow(1, gi * cg, cg)?.reshape(&[bs, cg * kh * kw, oh * ow])?;
            let wg = w.narrow(0, gi * cog, cog)?.reshape(&[cog, cg * kh * kw])?;
            outs.push(wg.matmul(&cg_cols)?);
        }
        let y = if g == 1 { outs.pop().unwrap_or_else(|| unreachable!()) } else { Tensor::cat(&outs, 1)? };
        y.reshape(&[bs, co, oh, ow])?
    };
    match b {
        Some(b) => y.add(&b.reshape(&[1, co, 1, 1])?),
        None => Ok(y),
    }
}

/// Transposed convolution (PyTorch `F.conv_transpose2d`), weight `[cin, cout/groups, kh, kw]`:
/// zero-insertion upsampling, padding `dil*(k-1)-pad`, then a convolution with the flipped,
/// transposed kernel.
pub fn conv_transpose2d(x: &Tensor, w: &Tensor, b: Option<&Tensor>, p: ConvTranspose2dParams) -> Result<Tensor> {
    let [_, c, h, wd] = dims4(x, "conv_transpose2d")?;
    let [ci, cog, kh, kw] = dims4(w, "conv_transpose2d")?;
    let g = p.groups.max(1);
    if ci != c || c % g != 0 {
        return Err(Error::Shape {
            op: "conv_transpose2d",
            msg: format!("input {:?} and weight {:?} do not match groups {g}", x.dims(), w.dims()),
        });
    }
    for (a, k) in [kh, kw].into_iter().enumerate() {
        if p.dilation[a] * (k - 1) < p.padding[a] {
            return Err(Error::Shape { op: "conv_transpose2d", msg: format!("padding {:?} too large", p.padding) });
        }
    }
    // Insert stride-1 zeros between input elements.
    let mut u = x.clone();
    for (a, &n) in [h, wd].iter().enumerate() {
        let s = p.stride[a];
        if s > 1 {
            let dim = 2 + a;
            let mut zs = u.shape();
            zs.insert(dim + 1, s - 1);
            let mut us = u.shape();
            us.insert(dim + 1, 1);
            let z = Tensor::zeros(&zs, x.dtype(), x.device())?;
            let inter = Tensor::cat(&[u.reshape(&us)?, z], dim as isize + 1)?;
            let mut merged = u.shape();
            merged[dim] = n * s;
            u = inter.reshape(&merged)?.narrow(dim as isize, 0, (n - 1) * s + 1)?;
        }
    }
    // Pad: dil*(k-1)-pad on both sides, plus output_padding at the end.
    let pad = [p.dilation[0] * (kh - 1) - p.padding[0], p.dilation[1] * (kw - 1) - p.padding[1]];
    let mut up = pad2d(&u, pad[0], pad[1], 0.0)?;
    for a in 0..2 {
        if p.output_padding[a] > 0 {
            let mut zs = up.shape();
            zs[2 + a] = p.output_padding[a];
            let z = Tensor::zeros(&zs, x.dtype(), x.device())?;
            up = Tensor::cat(&[up, z], 2 + a as isize)?;
        }
    }
    // Flip the kernel spatially and swap in/out channels per group.
    let flip = |t: &Tensor, dim: isize, n: usize| -> Result<Tensor> {
        let parts: Vec<Tensor> = (0..n).rev().map(|i| t.narrow(dim, i, 1)).collect::<Result<_>>()?;
        Tensor::cat(&parts, dim)
    };
    let wf = flip(&flip(w, 2, kh)?, 3, kw)?;
    let cig = c / g;
    let mut wgs = Vec::with_capacity(g);
    for gi in 0..g {
        wgs.push(wf.narrow(0, gi * cig, cig)?.transpose(0, 1)?); // [cog, cig, kh, kw]
    }
    let wc = if g == 1 { wgs.pop().unwrap_or_else(|| unreachable!()) } else { Tensor::cat(&wgs, 0)? };
    let cp = Conv2dParams { stride: [1, 1], padding: [0, 0], dilation: p.dilation, groups: g };
    let y = conv2d(&up, &wc.contiguous()?, None, cp)?;
    match b {
        Some(b) => y.add(&b.reshape(&[1, cog * g, 1, 1])?),
        None => Ok(y),
    }
}

/// Max pooling with implicit -inf padding (PyTorch `F.max_pool2d`).
pub fn max_pool2d(x: &Tensor, k: usize, s: usize, p: usize) -> Result<Tensor> {
    let [_, _, h, w] = dims4(x, "max_pool2d")?;
    let cp = Conv2dParams::new(s, p);
    let [oh, ow] = out_hw(&cp, h, w, k, k, "max_pool2d")?;
    let xp = pad2d(x, p, p, f64::NEG_INFINITY)?;
    let wins = windows(&xp, [k, k], [s, s], [1, 1], [oh, ow])?;
    let mut acc = wins[0].clone();
    for t in &wins[1..] {
        acc = acc.maximum(t)?;
    }
    Ok(acc)
}

/// Average pooling, zero padding counted in the divisor (PyTorch default).
pub fn avg_pool2d(x: &Tensor, k: usize, s: usize, p: usize) -> Result<Tensor> {
    let [_, _, h, w] = dims4(x, "avg_pool2d")?;
    let cp = Conv2dParams::new(s, p);
    let [oh, ow] = out_hw(&cp, h, w, k, k, "avg_pool2d")?;
    let xp = pad2d(x, p, p, 0.0)?;
    let wins = windows(&xp, [k, k], [s, s], [1, 1], [oh, ow])?;
    let mut acc = wins[0].clone();
    for t in &wins[1..] {
        acc = acc.add(t)?;
    }
    acc.mul_scalar(1.0 / (k * k) as f64)
}

/// `[B, C, H, W] -> [B, C]`.
pub fn global_avg_pool2d(x: &Tensor) -> Result<Tensor> {
    dims4(x, "global_avg_pool2d")?;
    x.mean(&[2, 3], false)
}

/// Normalises `x` over `dims` (biased variance) and returns `(x_hat, mean, biased_var)`.
fn standardize(x: &Tensor, dims: &[isize], eps: f64) -> Result<(Tensor, Tensor, Tensor)> {
    let mean = x.mean(dims, true)?;
    let xc = x.sub(&mean)?;
    let var = xc.sqr()?.mean(dims, true)?;
    Ok((xc.mul(&var.add_scalar(eps)?.rsqrt()?)?, mean, var))
}

/// BatchNorm over `[N, C, *]` (PyTorch `F.batch_norm`): training uses batch statistics
/// (biased) and updates running stats in place with the unbiased variance; eval uses the
/// running stats.
pub fn batch_norm(
    x: &Tensor,
    w: Option<&Tensor>,
    b: Option<&Tensor>,
    running: Option<(&Tensor, &Tensor)>,
    training: bool,
    momentum: f64,
    eps: f64,
) -> Result<Tensor> {
    let d = x.dims().to_vec();
    if d.len() < 2 {
        return Err(Error::Shape { op: "batch_norm", msg: format!("expected [N, C, *], got {d:?}") });
    }
    let c = d[1];
    let mut bshape = vec![1; d.len()];
    bshape[1] = c;
    let red: Vec<isize> = (0..d.len() as isize).filter(|&i| i != 1).collect();
    let y = if training || running.is_none() {
        let n = x.numel() / c.max(1);
        let (y, mean, var) = standardize(x, &red, eps)?;
        if let (true, Some((rm, rv))) = (training, running) {
            let unbias = if n > 1 { n as f64 / (n - 1) as f64 } else { 1.0 };
            no_grad(|| -> Result<()> {
                let nm = rm.mul_scalar(1.0 - momentum)?.add(&mean.reshape(&[c])?.mul_scalar(momentum)?)?;
                let nv = rv.mul_scalar(1.0 - momentum)?.add(&var.reshape(&[c])?.mul_scalar(momentum * unbias)?)?;
                rm.copy_from(&nm)?;
                rv.copy_from(&nv)
            })?;
        }
        y
    } else {
        let (rm, rv) = running.unwrap_or_else(|| unreachable!());
        let inv = rv.add_scalar(eps)?.rsqrt()?.reshape(&bshape)?;
        x.sub(&rm.reshape(&bshape)?)?.mul(&inv)?
    };
    affine(y, w, b, &bshape)
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

/// LayerNorm over the last dimension (PyTorch `F.layer_norm(x, (C,))`).
pub fn layer_norm(x: &Tensor, w: Option<&Tensor>, b: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    let r = x.rank();
    if r == 0 {
        return Err(Error::Shape { op: "layer_norm", msg: "scalar input".into() });
    }
    let (y, _, _) = standardize(x, &[-1], eps)?;
    let c = x.dims()[r - 1];
    affine(y, w, b, &[c])
}

/// LayerNorm over the channels of an NCHW tensor (ConvNeXt's `channels_first` LayerNorm).
pub fn layer_norm_channels_first(x: &Tensor, w: Option<&Tensor>, b: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    let [_, c, _, _] = dims4(x, "layer_norm_channels_first")?;
    let (y, _, _) = standardize(x, &[1], eps)?;
    affine(y, w, b, &[1, c, 1, 1])
}

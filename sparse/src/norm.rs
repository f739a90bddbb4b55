//! BatchNorm over active rows (SparK's SparseBatchNorm2d: BatchNorm1d on the gathered `[N, C]`)
//! and LayerNorm per active row (SparK's SparseConvNeXtLayerNorm). BatchNorm runs the engine's
//! `batch_norm` on the features, LayerNorm its `layer_norm` over the last dim.

use crate::SparseTensor;
use spark_engine::{Error, Result, Tensor};

fn check_param(op: &'static str, what: &str, t: Option<&Tensor>, x: &Tensor, c: usize) -> Result<()> {
    if let Some(t) = t {
        if t.numel() != c {
            return Err(Error::Shape { op, msg: format!("{what} must have {c} elements, got {:?}", t.dims()) });
        }
        if t.dtype() != x.dtype() {
            return Err(Error::DTypeMismatch { op, lhs: x.dtype(), rhs: t.dtype() });
        }
    }
    Ok(())
}

/// BatchNorm over the N active rows. Training: normalise with the batch mean and biased
/// variance over N and update the running stats in place (momentum, unbiased variance), as
/// PyTorch. Eval: use the running stats (batch stats when none are given). N = 0 gives an empty
/// output and leaves the running stats alone; N = 1 in training is an error, as in PyTorch.
pub fn sparse_batch_norm(
    x: &SparseTensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    running_mean: Option<&Tensor>,
    running_var: Option<&Tensor>,
    training: bool,
    momentum: f64,
    eps: f64,
) -> Result<SparseTensor> {
    let op = "sparse_batch_norm";
    let f = &x.features;
    let (n, c) = (f.dims()[0], f.dims()[1]);
    for (what, t) in [("weight", weight), ("bias", bias), ("running_mean", running_mean), ("running_var", running_var)]
    {
        check_param(op, what, t, f, c)?;
    }
    if n == 0 {
        // No active site: nothing to normalise, running statistics stay as they are.
        return Ok(x.clone());
    }
    // BatchNorm over active rows is exactly the engine's BatchNorm1d on the `[N, C]` features.
    // Eval without running statistics normalises with the batch statistics (and updates none).
    let (rm, rv, use_batch) = match (running_mean, running_var) {
        (Some(m), Some(v)) => (Some(m), Some(v), training),
        _ if training => (running_mean, running_var, true),
        _ => (None, None, true),
    };
    let features = f.batch_norm(weight, bias, rm, rv, use_batch, momentum, eps).map_err(|e| match e {
        Error::Shape { msg, .. } => Error::Shape { op, msg },
        other => other,
    })?;
    Ok(SparseTensor { features, active: x.active.clone() })
}

/// LayerNorm over the C channels of every active row (biased variance, eps inside the root),
/// with optional per-channel affine weight and bias.
pub fn sparse_layer_norm(
    x: &SparseTensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<SparseTensor> {
    let op = "sparse_layer_norm";
    let f = &x.features;
    let (n, c) = (f.dims()[0], f.dims()[1]);
    check_param(op, "weight", weight, f, c)?;
    check_param(op, "bias", bias, f, c)?;
    if n == 0 {
        return Ok(x.clone());
    }
    // LayerNorm of each active row over its C channels is the engine's layer_norm over the last dim.
    let (w, b) = (weight.map(|t| t.reshape(&[c])).transpose()?, bias.map(|t| t.reshape(&[c])).transpose()?);
    let out = f.layer_norm(1, w.as_ref(), b.as_ref(), eps)?;
    Ok(SparseTensor { features: out, active: x.active.clone() })
}

//! Test helpers shared by every crate: central-difference gradient checks and closeness asserts.

use crate::{no_grad, DType, Error, Result, Rng, Tensor};

/// Options for `gradcheck`.
#[derive(Clone, Copy, Debug)]
pub struct GradCheck {
    pub eps: f64,
    pub atol: f64,
    pub rtol: f64,
}

impl Default for GradCheck {
    /// Tolerances for f64 inputs: a wrong gradient is off by far more than this.
    fn default() -> Self {
        GradCheck { eps: 1e-6, atol: 1e-7, rtol: 1e-5 }
    }
}

/// Checks the analytic gradient of `f` w.r.t. each of `inputs` (f64 tensors) against central
/// differences of `L = sum(f(inputs) * W)` for a fixed random `W`, which exercises the full
/// vector-Jacobian product. Returns an error naming the input and element that disagrees.
pub fn gradcheck(f: impl Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor], opts: GradCheck) -> Result<()> {
    for t in inputs {
        if t.dtype() != DType::F64 {
            return Err(Error::Msg(format!("gradcheck: inputs must be f64, got {:?}", t.dtype())));
        }
    }
    let vars: Vec<Tensor> =
        inputs.iter().map(|t| t.contiguous().map(|c| c.detach().to_variable())).collect::<Result<_>>()?;
    let out = f(&vars)?;
    let mut rng = Rng::new(0x5eed);
    let w = Tensor::randn(out.dims(), 0.0, 1.0, &mut rng, DType::F64, out.device())?;
    let loss = out.mul(&w)?.sum_all()?;
    let grads = loss.backward()?;
    let objective = |xs: &[Tensor]| -> Result<f64> { no_grad(|| f(xs)?.mul(&w)?.sum_all()?.to_scalar()) };
    for (vi, v) in vars.iter().enumerate() {
        let analytic = match grads.get(v) {
            Some(g) => g.to_vec::<f64>()?,
            None => vec![0.0; v.numel()],
        };
        let base = v.to_vec::<f64>()?;
        for i in 0..base.len() {
            let eval = |delta: f64| -> Result<f64> {
                let mut x = base.clone();
                x[i] += delta;
                let mut xs: Vec<Tensor> = vars.iter().map(|t| t.detach()).collect();
                xs[vi] = Tensor::from_vec(x, v.dims())?;
                objective(&xs)
            };
            let numeric = (eval(opts.eps)? - eval(-opts.eps)?) / (2.0 * opts.eps);
            let a = analytic[i];
            if (a - numeric).abs() > opts.atol + opts.rtol * numeric.abs().max(a.abs()) {
                return Err(Error::Msg(format!(
                    "gradcheck: input {vi} (shape {:?}) element {i}: analytic {a:.10e} vs numeric {numeric:.10e}",
                    v.dims()
                )));
            }
        }
    }
    Ok(())
}

/// Asserts `|a - b| <= atol + rtol * |b|` elementwise, naming the worst element on failure.
pub fn assert_close(what: &str, a: &[f64], b: &[f64], atol: f64, rtol: f64) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ ({} vs {})", a.len(), b.len());
    let mut worst = (0usize, 0.0f64);
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        let excess = (x - y).abs() - (atol + rtol * y.abs());
        if excess > worst.1 || x.is_nan() != y.is_nan() {
            worst = (i, excess.max(f64::MIN_POSITIVE));
        }
    }
    if worst.1 > 0.0 {
        let i = worst.0;
        panic!("{what}: element {i}: got {} expected {} (atol {atol}, rtol {rtol})", a[i], b[i]);
    }
}

/// Tensor version of `assert_close`.
pub fn assert_tensor_close(what: &str, a: &Tensor, b: &Tensor, atol: f64, rtol: f64) {
    assert_eq!(a.dims(), b.dims(), "{what}: shapes differ");
    assert_close(what, &a.to_vec_f64().unwrap(), &b.to_vec_f64().unwrap(), atol, rtol);
}

/// The first CUDA device for a GPU test, or `None` after printing why `test` is skipped. With
/// `SPARK_REQUIRE_CUDA` set (scripts/gpu-check.sh) a missing GPU fails the test instead, so a
/// GPU run cannot pass by skipping.
pub fn cuda_or_skip(test: &str) -> Option<std::sync::Arc<crate::cuda::CudaDevice>> {
    match crate::cuda::device(0) {
        Ok(d) => Some(d),
        Err(e) if std::env::var_os("SPARK_REQUIRE_CUDA").is_some() => {
            panic!("{test}: SPARK_REQUIRE_CUDA is set but no GPU is usable: {e}")
        }
        Err(e) => {
            eprintln!("skipped {test}: {e}");
            None
        }
    }
}

//! Softmax / cross-entropy, indexing, normalisation, upsampling and dropout: values against
//! naive references and independent compositions of core ops, and f64 gradient checks
//! (contiguous, non-contiguous and broadcast inputs).

use spark_engine::testing::{assert_close, assert_tensor_close, gradcheck, GradCheck};
use spark_engine::{no_grad, DType, Device, Result, Rng, Tensor};

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, 0.0, 1.0, &mut Rng::new(seed), DType::F64, Device::Cpu).unwrap()
}
fn randn32(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, 0.0, 1.0, &mut Rng::new(seed), DType::F32, Device::Cpu).unwrap()
}
fn t64(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape).unwrap()
}
fn gc() -> GradCheck {
    GradCheck::default()
}
fn v64(t: &Tensor) -> Vec<f64> {
    t.to_vec_f64().unwrap()
}

/// Softmax along the middle dim of a `[a, n, b]` array, by definition.
fn naive_softmax(x: &[f64], a: usize, n: usize, b: usize) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    for i in 0..a {
        for j in 0..b {
            let idx = |k: usize| (i * n + k) * b + j;
            let z: f64 = (0..n).map(|k| x[idx(k)].exp()).sum();
            for k in 0..n {
                y[idx(k)] = x[idx(k)].exp() / z;
            }
        }
    }
    y
}

// ------------------------------------------------------------------ softmax / losses

#[test]
fn softmax_matches_definition_on_every_dim() {
    let x = randn(&[3, 4, 5], 1);
    let xv = v64(&x);
    for (dim, (a, n, b)) in [(0, (1, 3, 20)), (1, (3, 4, 5)), (2, (12, 5, 1)), (-1, (12, 5, 1))] {
        let want = naive_softmax(&xv, a, n, b);
        assert_close("softmax", &v64(&x.softmax(dim).unwrap()), &want, 1e-14, 1e-12);
        let logw: Vec<f64> = want.iter().map(|v| v.ln()).collect();
        assert_close("log_softmax", &v64(&x.log_softmax(dim).unwrap()), &logw, 1e-13, 1e-12);
    }
}

#[test]
fn softmax_is_stable_for_huge_logits() {
    let x = Tensor::from_vec(vec![1000.0f32, 1001.0, -1000.0, 0.0, 800.0, 800.0], &[2, 3]).unwrap();
    let y = x.softmax(1).unwrap().to_vec::<f32>().unwrap();
    let ly = x.log_softmax(1).unwrap().to_vec::<f32>().unwrap();
    assert!(y.iter().chain(&ly).all(|v| v.is_finite()), "{y:?} {ly:?}");
    assert!((y[1] - 1.0 / (1.0 + (-1.0f32).exp())).abs() < 1e-6);
    assert!((ly[0] - (-1.0 - (1.0f32 + (-1.0f32).exp()).ln())).abs() < 1e-5, "{}", ly[0]);
    assert!((y[4] - 0.5).abs() < 1e-6 && y[3] < 1e-30);
}

#[test]
fn softmax_gradients_contiguous_strided_and_broadcast() {
    let x = randn(&[3, 4, 5], 2);
    for dim in [0, 1, -1] {
        gradcheck(|t| t[0].softmax(dim), &[x.clone()], gc()).unwrap();
        gradcheck(|t| t[0].log_softmax(dim), &[x.clone()], gc()).unwrap();
    }
    // non-contiguous: a transposed view
    gradcheck(|t| t[0].transpose(0, 2)?.softmax(1), &[x.clone()], gc()).unwrap();
    gradcheck(|t| t[0].transpose(0, 2)?.log_softmax(-1), &[x], gc()).unwrap();
    // broadcast: the same row expanded over the batch
    let r = randn(&[1, 6], 3);
    gradcheck(|t| t[0].expand(&[4, 6])?.softmax(1), &[r.clone()], gc()).unwrap();
    gradcheck(|t| t[0].expand(&[4, 6])?.log_softmax(0), &[r], gc()).unwrap();
}

#[test]
fn cross_entropy_known_values() {
    // logits [1, 2, 3], target 2: nll = log(1 + e^-1 + e^-2); smoothing term = lse - mean(x).
    let x = t64(&[1.0, 2.0, 3.0, 1.0, 2.0, 3.0], &[2, 3]);
    let nll = (1.0 + (-1.0f64).exp() + (-2.0f64).exp()).ln();
    let l = x.cross_entropy(&[2, 2], 0.0).unwrap();
    assert_eq!(l.dims(), &[] as &[usize]);
    assert!((l.to_scalar().unwrap() - nll).abs() < 1e-14);
    let smooth = 3.0 + nll - 2.0;
    let l = x.cross_entropy(&[2, 0], 0.1).unwrap().to_scalar().unwrap();
    let nll0 = nll + 2.0; // target 0: -(1 - lse)
    let want = 0.5 * ((0.9 * nll + 0.1 * smooth) + (0.9 * nll0 + 0.1 * smooth));
    assert!((l - want).abs() < 1e-13, "{l} vs {want}");
}

#[test]
fn cross_entropy_gradients_and_errors() {
    let x = randn(&[5, 4], 4);
    let targets = [0, 3, 1, 1, 2];
    gradcheck(|t| t[0].cross_entropy(&targets, 0.0), &[x.clone()], gc()).unwrap();
    gradcheck(|t| t[0].cross_entropy(&targets, 0.2), &[x.clone()], gc()).unwrap();
    // transposed logits (non-contiguous) and broadcast rows
    let xt = randn(&[4, 5], 5);
    gradcheck(|t| t[0].t()?.cross_entropy(&targets, 0.1), &[xt], gc()).unwrap();
    let row = randn(&[1, 4], 6);
    gradcheck(|t| t[0].expand(&[5, 4])?.cross_entropy(&targets, 0.1), &[row], gc()).unwrap();
    let e = x.cross_entropy(&[0, 3, 7, 1, 2], 0.0).unwrap_err().to_string();
    assert!(e.contains("cross_entropy") && e.contains("target 7") && e.contains("index 2"), "{e}");
    assert!(x.cross_entropy(&[0, 1], 0.0).is_err());
    assert!(x.cross_entropy(&targets, 1.5).is_err());
}

#[test]
fn soft_cross_entropy_equals_smoothed_hard_targets() {
    let x = randn(&[5, 4], 7);
    let targets = [0usize, 3, 1, 1, 2];
    let eps = 0.2;
    let mut q = vec![eps / 4.0; 20];
    for (i, &t) in targets.iter().enumerate() {
        q[i * 4 + t] += 1.0 - eps;
    }
    let q = t64(&q, &[5, 4]);
    let a = x.soft_cross_entropy(&q).unwrap().to_scalar().unwrap();
    let b = x.cross_entropy(&targets, eps).unwrap().to_scalar().unwrap();
    assert!((a - b).abs() < 1e-13, "{a} vs {b}");
    gradcheck(|t| t[0].soft_cross_entropy(&t[1]), &[x.clone(), q.softmax(1).unwrap()], gc()).unwrap();
    // broadcast target row, transposed logits
    let qrow = randn(&[4], 8).softmax(0).unwrap();
    gradcheck(|t| t[0].t()?.soft_cross_entropy(&t[1]), &[randn(&[4, 5], 9), qrow], gc()).unwrap();
    assert!(x.soft_cross_entropy(&randn(&[3, 4], 1)).is_err());
}

// ------------------------------------------------------------------ indexing

#[test]
fn index_select_values_and_gradients() {
    let x = t64(&(0..24).map(|v| v as f64).collect::<Vec<_>>(), &[2, 3, 4]);
    let y = x.index_select(1, &[2, 0, 2]).unwrap();
    assert_eq!(y.dims(), &[2, 3, 4]);
    assert_eq!(&v64(&y)[..8], &[8.0, 9.0, 10.0, 11.0, 0.0, 1.0, 2.0, 3.0]);
    let y = x.index_select(-1, &[3]).unwrap();
    assert_eq!(v64(&y), vec![3.0, 7.0, 11.0, 15.0, 19.0, 23.0]);
    let r = randn(&[3, 4, 5], 10);
    gradcheck(|t| t[0].index_select(1, &[3, 1, 1, 0]), &[r.clone()], gc()).unwrap();
    gradcheck(|t| t[0].index_select(0, &[2, 2]), &[r.clone()], gc()).unwrap();
    gradcheck(|t| t[0].permute(&[2, 0, 1])?.index_select(2, &[0, 3, 0]), &[r.clone()], gc()).unwrap();
    gradcheck(|t| t[0].expand(&[3, 4, 5])?.index_select(0, &[1, 0]), &[randn(&[4, 1], 11)], gc()).unwrap();
    let e = r.index_select(1, &[0, 4]).unwrap_err().to_string();
    assert!(e.contains("index_select") && e.contains("index 4") && e.contains("position 1"), "{e}");
}

#[test]
fn gather_matches_pytorch_semantics() {
    // torch.gather(torch.tensor([[1,2],[3,4]]), 1, torch.tensor([[0,0],[1,0]])) == [[1,1],[4,3]]
    let x = t64(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
    assert_eq!(v64(&x.gather(1, &[0, 0, 1, 0], &[2, 2]).unwrap()), vec![1.0, 1.0, 4.0, 3.0]);
    assert_eq!(v64(&x.gather(0, &[1, 0, 1, 1], &[2, 2]).unwrap()), vec![3.0, 2.0, 3.0, 4.0]);
    // index smaller than the input off the gather dim
    let y = x.gather(1, &[1, 1, 0], &[1, 3]).unwrap();
    assert_eq!(y.dims(), &[1, 3]);
    assert_eq!(v64(&y), vec![2.0, 2.0, 1.0]);
    let r = randn(&[3, 4, 5], 12);
    let idx: Vec<usize> = (0..2 * 6 * 3).map(|i| (i * 7 + 3) % 4).collect();
    gradcheck(|t| t[0].gather(1, &idx, &[2, 6, 3]), &[r.clone()], gc()).unwrap();
    gradcheck(|t| t[0].transpose(0, 2)?.gather(1, &idx, &[2, 6, 3]), &[randn(&[5, 4, 3], 13)], gc()).unwrap();
    let e = r.gather(2, &[0, 5], &[1, 1, 2]).unwrap_err().to_string();
    assert!(e.contains("gather") && e.contains("index 5") && e.contains("position 1"), "{e}");
    assert!(r.gather(1, &[0, 1], &[2]).is_err(), "rank mismatch");
    assert!(r.gather(1, &[0; 4 * 4], &[4, 1, 4]).is_err(), "index larger than input off dim");
}

#[test]
fn scatter_add_values_and_gradients() {
    // torch.zeros(2, 4).scatter_add(1, [[0, 1, 0], [3, 3, 2]], [[1,2,3],[4,5,6]])
    let z = Tensor::zeros(&[2, 4], DType::F64, Device::Cpu).unwrap();
    let src = t64(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let y = z.scatter_add(1, &[0, 1, 0, 3, 3, 2], &[2, 3], &src).unwrap();
    assert_eq!(v64(&y), vec![4.0, 2.0, 0.0, 0.0, 0.0, 0.0, 6.0, 9.0]);
    // src larger than index: only the indexed part of src is used
    let big = t64(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 2]);
    let y = z.scatter_add(0, &[1, 0], &[1, 2], &big).unwrap();
    assert_eq!(v64(&y), vec![0.0, 2.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]);
    let x = randn(&[3, 4, 5], 14);
    let s = randn(&[3, 6, 5], 15);
    let idx: Vec<usize> = (0..2 * 6 * 4).map(|i| (i * 5 + 1) % 4).collect();
    gradcheck(|t| t[0].scatter_add(1, &idx, &[2, 6, 4], &t[1]), &[x.clone(), s.clone()], gc()).unwrap();
    gradcheck(
        |t| t[0].transpose(0, 1)?.scatter_add(1, &idx, &[2, 6, 4], &t[1].transpose(0, 1)?),
        &[randn(&[4, 3, 5], 16), randn(&[6, 3, 5], 17)],
        gc(),
    )
    .unwrap();
    let e = x.scatter_add(1, &[9], &[1, 1, 1], &s).unwrap_err().to_string();
    assert!(e.contains("scatter_add") && e.contains("index 9"), "{e}");
    assert!(x.scatter_add(1, &[0; 3 * 7 * 5], &[3, 7, 5], &s).is_err(), "index larger than src");
}

#[test]
fn gather_is_the_adjoint_of_scatter_add() {
    // <gather(x), g> == <x, scatter_add(0, g)> for any x, g.
    let x = randn(&[4, 6], 18);
    let g = randn(&[4, 5], 19);
    let idx: Vec<usize> = (0..20).map(|i| (i * 11 + 2) % 6).collect();
    let lhs = x.gather(1, &idx, &[4, 5]).unwrap().mul(&g).unwrap().sum_all().unwrap().to_scalar().unwrap();
    let sc = x.zeros_like().unwrap().scatter_add(1, &idx, &[4, 5], &g).unwrap();
    let rhs = x.mul(&sc).unwrap().sum_all().unwrap().to_scalar().unwrap();
    assert!((lhs - rhs).abs() < 1e-12);
}

#[test]
fn where_cond_and_masked_fill() {
    let mask = t64(&[1.0, 0.0, 0.0, 1.0, 1.0, 0.0], &[2, 3]);
    let a = t64(&[10.0, 20.0], &[2, 1]);
    let b = t64(&[1.0, 2.0, 3.0], &[3]);
    let y = Tensor::where_cond(&mask, &a, &b).unwrap();
    assert_eq!(v64(&y), vec![10.0, 2.0, 3.0, 20.0, 20.0, 3.0]);
    gradcheck(|t| Tensor::where_cond(&mask, &t[0], &t[1]), &[a.clone(), b.clone()], gc()).unwrap();
    // broadcast mask, non-contiguous operands
    let m = t64(&[0.0, 1.0, 1.0], &[3, 1]);
    gradcheck(
        |t| Tensor::where_cond(&m, &t[0].t()?, &t[1].expand(&[3, 4])?),
        &[randn(&[4, 3], 20), randn(&[1, 4], 21)],
        gc(),
    )
    .unwrap();
    // f32 mask with f64 operands is accepted (it is only a condition)
    let m32 = Tensor::from_vec(vec![1.0f32, 0.0], &[2]).unwrap();
    assert_eq!(v64(&Tensor::where_cond(&m32, &t64(&[1.0, 2.0], &[2]), &t64(&[3.0, 4.0], &[2])).unwrap()), [1.0, 4.0]);
    let x = randn(&[2, 3], 22);
    let f = x.masked_fill(&mask, -5.0).unwrap();
    let (fv, xv) = (v64(&f), v64(&x));
    for i in 0..6 {
        assert_eq!(fv[i], if [0, 3, 4].contains(&i) { -5.0 } else { xv[i] });
    }
    gradcheck(|t| t[0].masked_fill(&m.t()?, 0.5), &[randn(&[4, 3], 23)], gc()).unwrap();
    assert!(x.masked_fill(&t64(&[1.0; 12], &[2, 2, 3]), 0.0).is_err(), "mask larger than self");
    assert!(Tensor::where_cond(&mask, &a, &randn(&[4], 1)).is_err());
}

// ------------------------------------------------------------------ normalisation

/// BatchNorm from core ops (mean/var/sub/div): an independent reference with autograd.
fn bn_reference(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    let c = x.dims()[1];
    let dims: Vec<isize> = (0..x.rank() as isize).filter(|&d| d != 1).collect();
    let mut pshape = vec![1; x.rank()];
    pshape[1] = c;
    let mean = x.mean(&dims, true)?;
    let var = x.var(&dims, true, false)?;
    x.sub(&mean)?.div(&var.add_scalar(eps)?.sqrt()?)?.mul(&w.reshape(&pshape)?)?.add(&b.reshape(&pshape)?)
}

/// LayerNorm over the last `k` dims from core ops.
fn ln_reference(x: &Tensor, k: usize, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    let dims: Vec<isize> = (x.rank() - k..x.rank()).map(|d| d as isize).collect();
    let mean = x.mean(&dims, true)?;
    let var = x.var(&dims, true, false)?;
    x.sub(&mean)?.div(&var.add_scalar(eps)?.sqrt()?)?.mul(w)?.add(b)
}

/// Compares forward values and all three gradients of `f` and `reference` for one upstream
/// gradient.
fn compare_with_reference(
    what: &str,
    f: impl Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>,
    reference: impl Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>,
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    tol: f64,
) {
    let (xv, wv, bv) = (x.to_variable(), w.to_variable(), b.to_variable());
    let out = f(&xv, &wv, &bv).unwrap();
    let want = reference(&xv, &wv, &bv).unwrap();
    assert_tensor_close(&format!("{what} output"), &out, &want, tol, tol);
    let g = Tensor::randn(out.dims(), 0.0, 1.0, &mut Rng::new(99), out.dtype(), Device::Cpu).unwrap();
    let ga = out.backward_with(&g).unwrap();
    let gb = want.backward_with(&g).unwrap();
    for (name, v) in [("x", &xv), ("weight", &wv), ("bias", &bv)] {
        let (a, e) = (ga.get(v).unwrap(), gb.get(v).unwrap());
        assert_tensor_close(&format!("{what} grad {name}"), a, e, tol, tol);
    }
}

#[test]
fn batch_norm_train_matches_core_op_composition() {
    // Short segments (s < 64, row path) and long segments (s >= 64, channel path); the large
    // f32 case runs the rayon paths.
    for (shape, seed) in [(vec![6, 3], 30), (vec![4, 3, 2, 5], 31), (vec![2, 4, 9, 9], 32)] {
        let c = shape[1];
        let x = randn(&shape, seed).affine(2.0, 3.0).unwrap();
        let (w, b) = (randn(&[c], seed + 100), randn(&[c], seed + 200));
        let f = |x: &Tensor, w: &Tensor, b: &Tensor| x.batch_norm(Some(w), Some(b), None, None, true, 0.1, 1e-5);
        compare_with_reference("bn f64", f, |x, w, b| bn_reference(x, w, b, 1e-5), &x, &w, &b, 1e-10);
    }
    for shape in [vec![16, 32, 16, 16], vec![1024, 48]] {
        let c = shape[1];
        let x = randn32(&shape, 33).affine(0.5, -1.0).unwrap();
        let (w, b) = (randn32(&[c], 34), randn32(&[c], 35));
        let f = |x: &Tensor, w: &Tensor, b: &Tensor| x.batch_norm(Some(w), Some(b), None, None, true, 0.1, 1e-5);
        compare_with_reference("bn f32", f, |x, w, b| bn_reference(x, w, b, 1e-5), &x, &w, &b, 2e-3);
    }
}

#[test]
fn batch_norm_updates_running_stats_and_eval_uses_them() {
    let x = randn(&[4, 3, 5], 36).affine(1.5, 0.7).unwrap();
    let rm = Tensor::zeros(&[3], DType::F64, Device::Cpu).unwrap();
    let rv = Tensor::ones(&[3], DType::F64, Device::Cpu).unwrap();
    x.batch_norm(None, None, Some(&rm), Some(&rv), true, 0.1, 1e-5).unwrap();
    let mean = v64(&x.mean(&[0, 2], false).unwrap());
    let uvar = v64(&x.var(&[0, 2], false, true).unwrap());
    let want_m: Vec<f64> = mean.iter().map(|m| 0.1 * m).collect();
    let want_v: Vec<f64> = uvar.iter().map(|v| 0.9 + 0.1 * v).collect();
    assert_close("running_mean", &v64(&rm), &want_m, 1e-14, 1e-12);
    assert_close("running_var (unbiased)", &v64(&rv), &want_v, 1e-14, 1e-12);
    // eval: (x - rm) / sqrt(rv + eps) * w + b with the running stats, gradient through x only
    let (w, b) = (randn(&[3], 37), randn(&[3], 38));
    let before = v64(&rm);
    let y = x.batch_norm(Some(&w), Some(&b), Some(&rm), Some(&rv), false, 0.1, 1e-5).unwrap();
    let r = |t: &Tensor| t.reshape(&[1, 3, 1]).unwrap();
    let want = x.sub(&r(&rm)).unwrap().div(&r(&rv).add_scalar(1e-5).unwrap().sqrt().unwrap()).unwrap();
    let want = want.mul(&r(&w)).unwrap().add(&r(&b)).unwrap();
    assert_tensor_close("bn eval", &y, &want, 1e-12, 1e-12);
    assert_eq!(v64(&rm), before, "eval must not touch the running stats");
    gradcheck(
        |t| t[0].batch_norm(Some(&t[1]), Some(&t[2]), Some(&rm), Some(&rv), false, 0.1, 1e-5),
        &[x.clone(), w.clone(), b.clone()],
        gc(),
    )
    .unwrap();
    // frozen eval BN (no affine gradients): the backward skips the reduction pass
    gradcheck(|t| t[0].batch_norm(Some(&w), None, Some(&rm), Some(&rv), false, 0.1, 1e-5), &[x.clone()], gc()).unwrap();
    assert!(x.batch_norm(None, None, None, None, false, 0.1, 1e-5).is_err(), "eval without stats");
    assert!(randn(&[1, 3], 1).batch_norm(None, None, None, None, true, 0.1, 1e-5).is_err(), "one value");
    let e = x.batch_norm(Some(&randn(&[4], 1)), None, None, None, true, 0.1, 1e-5).unwrap_err().to_string();
    assert!(e.contains("batch_norm") && e.contains("[4]"), "{e}");
}

#[test]
fn batch_norm_gradients() {
    let x = randn(&[3, 2, 2, 3], 40);
    let (w, b) = (randn(&[2], 41), randn(&[2], 42));
    let bn = |t: &[Tensor]| t[0].batch_norm(Some(&t[1]), Some(&t[2]), None, None, true, 0.1, 1e-5);
    gradcheck(bn, &[x.clone(), w.clone(), b.clone()], gc()).unwrap();
    // channels-last data viewed as NCHW (non-contiguous), and no affine parameters
    gradcheck(
        |t| t[0].permute(&[0, 3, 1, 2])?.batch_norm(None, None, None, None, true, 0.1, 1e-5),
        &[randn(&[2, 3, 2, 4], 43)],
        gc(),
    )
    .unwrap();
    // a broadcast input: the same channel row for every sample
    gradcheck(
        |t| t[0].expand(&[5, 4])?.add(&t[1])?.batch_norm(Some(&t[2]), None, None, None, true, 0.1, 1e-5),
        &[randn(&[1, 4], 44), randn(&[5, 1], 45), randn(&[4], 46)],
        gc(),
    )
    .unwrap();
    // long segments (channel-parallel statistics path)
    gradcheck(bn, &[randn(&[2, 2, 8, 9], 47), w, b], gc()).unwrap();
}

#[test]
fn batch_norm_nchw_equals_rows_of_channels() {
    let x = randn32(&[4, 8, 10, 10], 48);
    let (w, b) = (randn32(&[8], 49), randn32(&[8], 50));
    let y = x.batch_norm(Some(&w), Some(&b), None, None, true, 0.1, 1e-5).unwrap();
    let rows = x.permute(&[0, 2, 3, 1]).unwrap().reshape(&[400, 8]).unwrap();
    let y2 = rows.batch_norm(Some(&w), Some(&b), None, None, true, 0.1, 1e-5).unwrap();
    let y2 = y2.reshape(&[4, 10, 10, 8]).unwrap().permute(&[0, 3, 1, 2]).unwrap();
    assert_tensor_close("bn nchw vs rows", &y, &y2, 1e-6, 1e-5);
}

#[test]
fn layer_norm_matches_core_op_composition() {
    for (shape, k, seed) in [(vec![5, 7], 1, 60), (vec![2, 3, 4, 6], 2, 61), (vec![2, 3, 4], 3, 62)] {
        let ns = &shape[shape.len() - k..];
        let x = randn(&shape, seed).affine(3.0, 5.0).unwrap();
        let (w, b) = (randn(ns, seed + 1), randn(ns, seed + 2));
        compare_with_reference(
            "ln f64",
            |x, w, b| x.layer_norm(k, Some(w), Some(b), 1e-6),
            |x, w, b| ln_reference(x, k, w, b, 1e-6),
            &x,
            &w,
            &b,
            1e-10,
        );
    }
    // large f32 (rayon path), ConvNeXt-like rows
    let x = randn32(&[8, 28, 28, 96], 63);
    let (w, b) = (randn32(&[96], 64), randn32(&[96], 65));
    compare_with_reference(
        "ln f32",
        |x, w, b| x.layer_norm(1, Some(w), Some(b), 1e-6),
        |x, w, b| ln_reference(x, 1, w, b, 1e-6),
        &x,
        &w,
        &b,
        2e-3,
    );
}

#[test]
fn layer_norm_gradients() {
    let x = randn(&[3, 4, 5], 66);
    let (w, b) = (randn(&[5], 67), randn(&[5], 68));
    let ln = |t: &[Tensor]| t[0].layer_norm(1, Some(&t[1]), Some(&t[2]), 1e-5);
    gradcheck(ln, &[x.clone(), w.clone(), b.clone()], gc()).unwrap();
    gradcheck(|t| t[0].layer_norm(2, Some(&t[1]), None, 1e-5), &[x.clone(), randn(&[4, 5], 69)], gc()).unwrap();
    gradcheck(|t| t[0].transpose(0, 2)?.layer_norm(1, None, None, 1e-5), &[x.clone()], gc()).unwrap();
    gradcheck(|t| t[0].expand(&[3, 4, 5])?.add(&t[1])?.layer_norm(1, None, None, 1e-5), &[randn(&[4, 1], 70), x], gc())
        .unwrap();
    let e = randn(&[2, 3], 1).layer_norm(1, Some(&randn(&[2], 1)), None, 1e-5).unwrap_err().to_string();
    assert!(e.contains("layer_norm") && e.contains("[2]") && e.contains("[3]"), "{e}");
    assert!(randn(&[2, 3], 1).layer_norm(3, None, None, 1e-5).is_err());
}

#[test]
fn layer_norm_channels_first_equals_permuted_layer_norm() {
    for (shape, seed) in [(vec![2, 5, 3, 4], 71), (vec![3, 6], 72), (vec![2, 32, 20, 20], 73)] {
        let c = shape[1];
        let x = randn(&shape, seed).affine(2.0, -1.0).unwrap();
        let (w, b) = (randn(&[c], seed + 1), randn(&[c], seed + 2));
        let r = shape.len();
        let mut to_last: Vec<usize> = (0..r).filter(|&d| d != 1).collect();
        to_last.push(1);
        let mut back: Vec<usize> = vec![0, r - 1];
        back.extend(1..r - 1);
        compare_with_reference(
            "ln channels_first",
            |x, w, b| x.layer_norm_channels_first(Some(w), Some(b), 1e-6),
            |x, w, b| x.permute(&to_last)?.layer_norm(1, Some(w), Some(b), 1e-6)?.permute(&back),
            &x,
            &w,
            &b,
            1e-10,
        );
    }
}

#[test]
fn layer_norm_channels_first_gradients() {
    let x = randn(&[2, 3, 2, 3], 74);
    let (w, b) = (randn(&[3], 75), randn(&[3], 76));
    let ln = |t: &[Tensor]| t[0].layer_norm_channels_first(Some(&t[1]), Some(&t[2]), 1e-6);
    gradcheck(ln, &[x, w.clone(), b.clone()], gc()).unwrap();
    // NHWC storage viewed as NCHW, and a broadcast input
    gradcheck(
        |t| t[0].permute(&[0, 3, 1, 2])?.layer_norm_channels_first(Some(&t[1]), None, 1e-6),
        &[randn(&[2, 2, 3, 3], 77), w],
        gc(),
    )
    .unwrap();
    gradcheck(
        |t| t[0].expand(&[2, 3, 4])?.add(&t[1])?.layer_norm_channels_first(None, Some(&t[2]), 1e-6),
        &[randn(&[3, 1], 78), randn(&[2, 1, 4], 79), b],
        gc(),
    )
    .unwrap();
    // positions split over several tiles of the statistics pass
    gradcheck(|t| t[0].layer_norm_channels_first(None, None, 1e-6), &[randn(&[1, 2, 300], 80)], gc()).unwrap();
    let f32big = randn32(&[4, 64, 28, 28], 81);
    let y = f32big.layer_norm_channels_first(None, None, 1e-6).unwrap();
    let m = y.mean(&[1], false).unwrap().abs().unwrap().max(&[0, 1, 2], false).unwrap().to_scalar().unwrap();
    assert!(m < 1e-5, "channel means after LN: {m}");
}

// ------------------------------------------------------------------ upsampling, dropout

#[test]
fn upsample_nearest_and_repeat_interleave() {
    let x = t64(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[1, 1, 2, 3]);
    let y = x.upsample_nearest2d(2, 1).unwrap();
    assert_eq!(y.dims(), &[1, 1, 4, 3]);
    assert_eq!(v64(&y), vec![1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 4.0, 5.0, 6.0]);
    let y = x.upsample_nearest2d(1, 2).unwrap();
    assert_eq!(&v64(&y)[..6], &[1.0, 1.0, 2.0, 2.0, 3.0, 3.0]);
    let r = x.repeat_interleave(2, 3).unwrap();
    assert_eq!(v64(&r)[..6], [1.0, 1.0, 2.0, 2.0, 3.0, 3.0]);
    assert_eq!(v64(&t64(&[1.0, 2.0], &[2]).repeat_interleave(3, 0).unwrap()), [1.0, 1.0, 1.0, 2.0, 2.0, 2.0]);
    // SparK: a patch mask upsampled by repeat_interleave on H then W equals nearest upsampling.
    let m = randn(&[2, 3, 4, 5], 90);
    let a = m.upsample_nearest2d(3, 2).unwrap();
    let b = m.repeat_interleave(3, 2).unwrap().repeat_interleave(2, -1).unwrap();
    assert_eq!(v64(&a), v64(&b));
    gradcheck(|t| t[0].upsample_nearest2d(2, 3), &[randn(&[2, 2, 3, 2], 91)], gc()).unwrap();
    gradcheck(|t| t[0].permute(&[0, 3, 1, 2])?.upsample_nearest2d(2, 2), &[randn(&[1, 3, 2, 2], 92)], gc()).unwrap();
    gradcheck(|t| t[0].expand(&[2, 2, 3, 3])?.upsample_nearest2d(1, 2), &[randn(&[2, 1, 1, 3], 93)], gc()).unwrap();
    for dim in [0, 1, 2] {
        gradcheck(|t| t[0].repeat_interleave(3, dim), &[randn(&[2, 3, 4], 94)], gc()).unwrap();
    }
    gradcheck(|t| t[0].t()?.repeat_interleave(2, 0), &[randn(&[3, 4], 95)], gc()).unwrap();
    assert!(randn(&[2, 3], 1).upsample_nearest2d(2, 2).is_err());
    assert!(randn(&[1, 1, 2, 2], 1).upsample_nearest2d(0, 2).is_err());
}

#[test]
fn dropout_masks_scales_and_backpropagates_the_same_mask() {
    let x = Tensor::ones(&[200, 100], DType::F64, Device::Cpu).unwrap();
    let mut rng = Rng::new(5);
    assert!(x.dropout(0.3, false, &mut rng).unwrap().same_storage(&x), "eval is the identity");
    let xv = x.to_variable();
    let y = xv.dropout(0.3, true, &mut rng).unwrap();
    let yv = v64(&y);
    let kept = yv.iter().filter(|&&v| v != 0.0).count() as f64 / yv.len() as f64;
    assert!((kept - 0.7).abs() < 0.02, "kept fraction {kept}");
    assert!(yv.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.7).abs() < 1e-12));
    let g = y.sum_all().unwrap().backward().unwrap();
    assert_eq!(v64(g.get(&xv).unwrap()), yv, "gradient is the same scaled mask");
    // reproducible from the seed
    let a = v64(&x.dropout(0.5, true, &mut Rng::new(9)).unwrap());
    let b = v64(&x.dropout(0.5, true, &mut Rng::new(9)).unwrap());
    assert_eq!(a, b);
    assert!(v64(&x.dropout(1.0, true, &mut rng).unwrap()).iter().all(|&v| v == 0.0));
    assert!(x.dropout(1.5, true, &mut rng).is_err());
    let r = randn(&[3, 4], 96);
    gradcheck(|t| t[0].t()?.dropout(0.4, true, &mut Rng::new(3)), &[r], gc()).unwrap();
    no_grad(|| assert!(!x.to_variable().dropout(0.5, true, &mut Rng::new(1)).unwrap().requires_grad()));
}

#[test]
fn indexing_and_repeat_gradients_through_broadcast_inputs() {
    let row = randn(&[1, 5], 100);
    let idx: Vec<usize> = (0..12).map(|i| (i * 3 + 1) % 5).collect();
    gradcheck(|t| t[0].expand(&[4, 5])?.gather(1, &idx, &[4, 3]), &[row.clone()], gc()).unwrap();
    gradcheck(
        |t| t[0].expand(&[4, 5])?.scatter_add(1, &idx, &[4, 3], &t[1].expand(&[4, 3])?),
        &[row.clone(), randn(&[3], 101)],
        gc(),
    )
    .unwrap();
    let mask = t64(&[1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0], &[4, 3]);
    gradcheck(|t| t[0].expand(&[4, 3])?.masked_fill(&mask, 2.0), &[randn(&[3], 102)], gc()).unwrap();
    gradcheck(|t| t[0].expand(&[3, 4])?.repeat_interleave(2, 1), &[randn(&[3, 1], 103)], gc()).unwrap();
}

#[test]
fn large_tensors_take_the_parallel_paths() {
    // softmax over rows and over a middle dim, against the definition
    let x = randn(&[40, 1000], 110);
    assert_close("softmax rows", &v64(&x.softmax(1).unwrap()), &naive_softmax(&v64(&x), 40, 1000, 1), 1e-15, 1e-12);
    let y = randn(&[10, 8, 500], 111);
    assert_close("softmax mid", &v64(&y.softmax(1).unwrap()), &naive_softmax(&v64(&y), 10, 8, 500), 1e-15, 1e-12);
    // cross-entropy of many rows equals the mean of per-row -log_softmax at the target
    let targets: Vec<usize> = (0..40).map(|i| (i * 37) % 1000).collect();
    let lp = v64(&x.log_softmax(1).unwrap());
    let want = -targets.iter().enumerate().map(|(i, &t)| lp[i * 1000 + t]).sum::<f64>() / 40.0;
    assert!((x.cross_entropy(&targets, 0.0).unwrap().to_scalar().unwrap() - want).abs() < 1e-12);
    // index_select with repeats, and its adjoint (gradient = counts of each index)
    let z = randn(&[300, 200], 112).to_variable();
    let idx: Vec<usize> = (0..400).map(|i| (i * 7) % 300).collect();
    let sel = z.index_select(0, &idx).unwrap();
    let (zv, sv) = (v64(&z), v64(&sel));
    for (k, &j) in idx.iter().enumerate().step_by(37) {
        assert_eq!(&sv[k * 200..(k + 1) * 200], &zv[j * 200..(j + 1) * 200]);
    }
    let g = v64(sel.sum_all().unwrap().backward().unwrap().get(&z).unwrap());
    for j in 0..300 {
        let count = idx.iter().filter(|&&i| i == j).count() as f64;
        assert_eq!(g[j * 200], count, "row {j}");
    }
    // where_cond contiguous fast path against an elementwise loop
    let (a, b) = (randn(&[256, 256], 113), randn(&[256, 256], 114));
    let m = a.gt_mask(&b).unwrap();
    let w = v64(&Tensor::where_cond(&m, &a, &b).unwrap());
    let (av, bv) = (v64(&a), v64(&b));
    assert!(w.iter().zip(av.iter().zip(&bv)).all(|(&o, (&p, &q))| o == p.max(q)));
    // upsample of a big map equals repeat_interleave twice
    let u = randn(&[4, 8, 32, 32], 115);
    let up = u.upsample_nearest2d(2, 2).unwrap();
    assert_eq!(v64(&up), v64(&u.repeat_interleave(2, 2).unwrap().repeat_interleave(2, 3).unwrap()));
}

// ------------------------------------------------------------------ core fix (tensor.rs)

struct Double;
impl spark_engine::Op for Double {
    fn name(&self) -> &'static str {
        "double"
    }
    fn backward(&self, _: &[Tensor], _: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.mul_scalar(2.0)?)])
    }
}

#[test]
fn attach_op_on_a_shared_handle_keeps_the_input_gradient() {
    // `contiguous()` of a contiguous tensor returns the same handle; recording an op on it used
    // to reuse the input's id, so backward merged output and input and dropped the gradient.
    let x = t64(&[1.0, 2.0], &[2]).to_variable();
    let y = x.mul_scalar(1.0).unwrap();
    let z = y.contiguous().unwrap().attach_op(vec![y.clone()], Double);
    assert_ne!(z.id(), y.id());
    let g = z.sum_all().unwrap().backward().unwrap();
    assert_eq!(v64(g.get(&x).expect("gradient reaches x")), vec![2.0, 2.0]);
}

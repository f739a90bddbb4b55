//! Gradient checks and value checks for the core ops: views, broadcasting binary ops, unary
//! ops, reductions, matmul, cat/stack.

use spark_engine::testing::{assert_close, gradcheck, GradCheck};
use spark_engine::{DType, Device, Rng, Tensor};

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, 0.0, 1.0, &mut Rng::new(seed), DType::F64, Device::Cpu).unwrap()
}

/// Values kept away from 0 (for log/sqrt/div and kinks).
fn positive(shape: &[usize], seed: u64) -> Tensor {
    Tensor::rand(shape, 0.5, 2.0, &mut Rng::new(seed), DType::F64, Device::Cpu).unwrap()
}

#[test]
fn binary_ops_broadcast_gradients() {
    let a = randn(&[2, 3, 4], 1);
    let b = positive(&[3, 1], 2);
    for (name, f) in [
        ("add", Tensor::add as fn(&Tensor, &Tensor) -> _),
        ("sub", Tensor::sub),
        ("mul", Tensor::mul),
        ("div", Tensor::div),
        ("maximum", Tensor::maximum),
        ("minimum", Tensor::minimum),
    ] {
        gradcheck(|x| f(&x[0], &x[1]), &[a.clone(), b.clone()], GradCheck::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn non_contiguous_inputs() {
    let a = randn(&[4, 3], 3);
    let b = randn(&[3, 4], 4);
    // a^T is a non-contiguous view.
    gradcheck(|x| x[0].t()?.mul(&x[1]), &[a, b], GradCheck::default()).unwrap();
}

#[test]
fn unary_ops_gradients() {
    let x = randn(&[3, 5], 5).affine(2.0, 0.05).unwrap(); // avoid exact kinks
    let p = positive(&[3, 5], 6);
    let cases: Vec<(&str, Box<dyn Fn(&Tensor) -> spark_engine::Result<Tensor>>, &Tensor)> = vec![
        ("exp", Box::new(|t: &Tensor| t.exp()), &x),
        ("log", Box::new(|t: &Tensor| t.log()), &p),
        ("sqrt", Box::new(|t: &Tensor| t.sqrt()), &p),
        ("rsqrt", Box::new(|t: &Tensor| t.rsqrt()), &p),
        ("pow", Box::new(|t: &Tensor| t.powf(2.5)), &p),
        ("abs", Box::new(|t: &Tensor| t.abs()), &x),
        ("clamp", Box::new(|t: &Tensor| t.clamp(-0.7, 0.9)), &x),
        ("relu", Box::new(|t: &Tensor| t.relu()), &x),
        ("relu6", Box::new(|t: &Tensor| t.affine(4.0, 0.0)?.relu6()), &x),
        ("gelu", Box::new(|t: &Tensor| t.gelu()), &x),
        ("sigmoid", Box::new(|t: &Tensor| t.sigmoid()), &x),
        ("tanh", Box::new(|t: &Tensor| t.tanh()), &x),
        ("neg", Box::new(|t: &Tensor| t.neg()), &x),
        ("affine", Box::new(|t: &Tensor| t.affine(-1.5, 0.25)), &x),
    ];
    for (name, f, input) in cases {
        gradcheck(|v| f(&v[0]), &[input.clone()], GradCheck::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn unary_ops_on_large_f32_tensors_match_elementwise_formulas() {
    // Longer than the parallel threshold and not a whole number of chunks: the chunked,
    // specialised kernels must cover every element, forward and backward.
    let n = 3 * (1 << 14) + 77;
    let x = Tensor::randn(&[n], 0.0, 4.0, &mut Rng::new(8), DType::F32, Device::Cpu).unwrap().to_variable();
    let xs = x.to_vec::<f32>().unwrap();
    let cases: Vec<(&str, Box<dyn Fn(&Tensor) -> spark_engine::Result<Tensor>>, Box<dyn Fn(f32) -> (f32, f32)>)> = vec![
        ("relu", Box::new(|t| t.relu()), Box::new(|v| (v.max(0.0), if v > 0.0 { 1.0 } else { 0.0 }))),
        (
            "relu6",
            Box::new(|t| t.relu6()),
            Box::new(|v| (v.clamp(0.0, 6.0), if v > 0.0 && v < 6.0 { 1.0 } else { 0.0 })),
        ),
        ("affine", Box::new(|t| t.affine(-1.5, 0.25)), Box::new(|v| (-1.5 * v + 0.25, -1.5))),
        ("tanh", Box::new(|t| t.tanh()), Box::new(|v| (v.tanh(), 1.0 - v.tanh() * v.tanh()))),
    ];
    for (name, f, want) in cases {
        let y = f(&x).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        let (got_y, got_g) = (y.to_vec::<f32>().unwrap(), g.get(&x).unwrap().to_vec::<f32>().unwrap());
        for (i, &v) in xs.iter().enumerate() {
            let (wy, wg) = want(v);
            assert!((got_y[i] - wy).abs() <= 1e-6 * (1.0 + wy.abs()), "{name} forward [{i}]: {} vs {wy}", got_y[i]);
            assert!((got_g[i] - wg).abs() <= 1e-6, "{name} gradient [{i}]: {} vs {wg}", got_g[i]);
        }
    }
}

#[test]
fn gelu_matches_pytorch_values() {
    // 0.5 x (1 + erf(x / sqrt 2)) from Python's math.erf (what torch.nn.functional.gelu computes)
    let x = Tensor::from_vec(vec![-3.0f64, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0], &[7]).unwrap();
    let want = [
        -0.00404969409489031,
        -0.15865525393145707,
        -0.15426876936299344,
        0.0,
        0.34573123063700656,
        0.8413447460685429,
        2.99595030590511,
    ];
    assert_close("gelu", &x.gelu().unwrap().to_vec::<f64>().unwrap(), &want, 1e-15, 1e-13);
}

#[test]
fn reductions_values_and_gradients() {
    let x = randn(&[2, 3, 4], 7);
    let v = x.to_vec::<f64>().unwrap();
    let s = x.sum(&[1], false).unwrap();
    assert_eq!(s.dims(), &[2, 4]);
    let want: f64 = (0..3).map(|j| v[j * 4 + 1]).sum();
    assert!((s.to_vec::<f64>().unwrap()[1] - want).abs() < 1e-12);
    gradcheck(|t| t[0].sum(&[0, 2], true), &[x.clone()], GradCheck::default()).unwrap();
    gradcheck(|t| t[0].mean(&[-1], false), &[x.clone()], GradCheck::default()).unwrap();
    gradcheck(|t| t[0].max(&[1], false), &[x.clone()], GradCheck::default()).unwrap();
    gradcheck(|t| t[0].var(&[1, 2], true, true), &[x.clone()], GradCheck::default()).unwrap();
    gradcheck(|t| t[0].var(&[0], false, false), &[x.clone()], GradCheck::default()).unwrap();
    let var = x.var(&[0, 1, 2], false, true).unwrap().to_scalar().unwrap();
    let mean = v.iter().sum::<f64>() / 24.0;
    let want = v.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / 23.0;
    assert!((var - want).abs() < 1e-12);
}

#[test]
fn views_gradients() {
    let x = randn(&[2, 3, 4], 8);
    gradcheck(|t| t[0].permute(&[2, 0, 1])?.reshape(&[4, 6]), &[x.clone()], GradCheck::default()).unwrap();
    gradcheck(|t| t[0].narrow(2, 1, 2), &[x.clone()], GradCheck::default()).unwrap();
    gradcheck(|t| t[0].narrow(1, 1, 2)?.transpose(0, 2)?.contiguous(), &[x.clone()], GradCheck::default()).unwrap();
    let y = randn(&[3, 1], 9);
    gradcheck(|t| t[0].expand(&[2, 3, 5]), &[y], GradCheck::default()).unwrap();
    gradcheck(|t| t[0].unsqueeze(1)?.squeeze(1)?.flatten_from(1), &[x], GradCheck::default()).unwrap();
}

#[test]
fn matmul_values_and_gradients() {
    let a = randn(&[2, 3, 5], 10);
    let b = randn(&[5, 4], 11);
    let c = a.matmul(&b).unwrap();
    assert_eq!(c.dims(), &[2, 3, 4]);
    let (va, vb, vc) = (a.to_vec::<f64>().unwrap(), b.to_vec::<f64>().unwrap(), c.to_vec::<f64>().unwrap());
    let want: f64 = (0..5).map(|p| va[15 + 2 * 5 + p] * vb[p * 4 + 3]).sum();
    assert!((vc[12 + 2 * 4 + 3] - want).abs() < 1e-12);
    gradcheck(|t| t[0].matmul(&t[1]), &[a.clone(), b.clone()], GradCheck::default()).unwrap();
    // transposed (non-contiguous) operand
    let bt = randn(&[4, 5], 12);
    gradcheck(|t| t[0].matmul(&t[1].t()?), &[a, bt], GradCheck::default()).unwrap();
    // A channels-last view of an NCHW map times a weight (ConvNeXt's pointwise `Linear`): the
    // batch dims are folded into the GEMM's rows; values equal the per-matrix products.
    let x = randn(&[2, 5, 3, 2], 13);
    let w = randn(&[5, 4], 14);
    let y = x.permute(&[0, 2, 3, 1]).unwrap().matmul(&w).unwrap();
    assert_eq!(y.dims(), &[2, 3, 2, 4]);
    let (vx, vw, vy) = (x.to_vec::<f64>().unwrap(), w.to_vec::<f64>().unwrap(), y.to_vec::<f64>().unwrap());
    // y[1, 2, 0, 3] = sum_c x[1, c, 2, 0] * w[c, 3]
    let want: f64 = (0..5).map(|c| vx[30 + c * 6 + 2 * 2] * vw[c * 4 + 3]).sum();
    assert!((vy[24 + 2 * 8 + 3] - want).abs() < 1e-12);
    gradcheck(|t| t[0].permute(&[0, 2, 3, 1])?.matmul(&t[1]), &[x, w], GradCheck::default()).unwrap();
}

#[test]
fn cat_and_stack() {
    let a = randn(&[2, 3], 13);
    let b = randn(&[2, 1], 14);
    let c = Tensor::cat(&[a.clone(), b.clone()], 1).unwrap();
    assert_eq!(c.dims(), &[2, 4]);
    assert_eq!(c.to_vec::<f64>().unwrap()[3], b.to_vec::<f64>().unwrap()[0]);
    gradcheck(|t| Tensor::cat(&[t[0].clone(), t[1].clone()], -1), &[a.clone(), b], GradCheck::default()).unwrap();
    gradcheck(
        |t| Tensor::stack(&[t[0].clone(), t[1].clone()], 0),
        &[a.clone(), a.affine(2.0, 1.0).unwrap()],
        GradCheck::default(),
    )
    .unwrap();
}

#[test]
fn gradient_accumulates_over_backward_calls_and_no_grad_records_nothing() {
    let w = Tensor::from_vec(vec![1.0f32, 2.0], &[2]).unwrap().to_variable();
    let mut store = spark_engine::GradStore::new();
    w.mul_scalar(3.0).unwrap().sum_all().unwrap().backward_into(&mut store).unwrap();
    w.mul(&w).unwrap().sum_all().unwrap().backward_into(&mut store).unwrap();
    assert_eq!(store.get(&w).unwrap().to_vec::<f32>().unwrap(), vec![5.0, 7.0]);
    let y = spark_engine::no_grad(|| w.mul_scalar(2.0).unwrap());
    assert!(!y.requires_grad());
    assert!(y.sum_all().unwrap().backward().is_err());
}

#[test]
fn shape_errors_name_the_op() {
    let a = Tensor::zeros(&[2, 3], DType::F32, Device::Cpu).unwrap();
    let b = Tensor::zeros(&[4], DType::F32, Device::Cpu).unwrap();
    let e = a.add(&b).unwrap_err().to_string();
    assert!(e.contains("add") && e.contains("[2, 3]") && e.contains("[4]"), "{e}");
    let e = a.matmul(&a).unwrap_err().to_string();
    assert!(e.contains("matmul"), "{e}");
    let c = Tensor::zeros(&[2, 3], DType::F64, Device::Cpu).unwrap();
    assert!(a.mul(&c).unwrap_err().to_string().contains("dtype"));
}

/// Broadcast patterns the networks use (bias, per-pixel mask, permuted operand), on sizes that
/// take the parallel path, against an index-by-index reference.
#[test]
fn broadcast_fast_paths_match_elementwise_reference() {
    let x = randn(&[4, 8, 33, 35], 20);
    let cases = [
        ("bias", randn(&[1, 8, 1, 1], 21)),
        ("mask", randn(&[4, 1, 33, 35], 22)),
        ("row", randn(&[35], 23)),
        ("col", randn(&[33, 1], 24)),
        ("permuted", randn(&[4, 33, 35, 8], 25).permute(&[0, 3, 1, 2]).unwrap()),
        ("scalar", randn(&[], 26)),
    ];
    let xv = x.to_vec::<f64>().unwrap();
    for (name, y) in cases {
        let got = x.sub(&y).unwrap().to_vec::<f64>().unwrap();
        let ye = y.expand(x.dims()).unwrap().to_vec::<f64>().unwrap();
        let want: Vec<f64> = xv.iter().zip(&ye).map(|(a, b)| a - b).collect();
        assert_close(name, &got, &want, 0.0, 0.0);
        // Operands swapped (broadcast on the left).
        let got = y.mul(&x).unwrap().to_vec::<f64>().unwrap();
        let want: Vec<f64> = xv.iter().zip(&ye).map(|(a, b)| a * b).collect();
        assert_close(name, &got, &want, 0.0, 0.0);
    }
    // Same storage on both sides.
    let sq = x.mul(&x).unwrap().to_vec::<f64>().unwrap();
    assert_close("x*x", &sq, &xv.iter().map(|v| v * v).collect::<Vec<_>>(), 0.0, 0.0);
}

#[test]
fn backward_profiler_records_ops_by_name_and_shape() {
    use spark_engine::profile::{backward_profile, set_backward_profiling};
    let a = randn(&[3, 4], 30).to_variable();
    let b = randn(&[4, 5], 31).to_variable();
    set_backward_profiling(true);
    a.matmul(&b).unwrap().relu().unwrap().sum_all().unwrap().backward().unwrap();
    set_backward_profiling(false);
    let rows = backward_profile();
    // Other tests may run concurrently and add their own rows; ours must be there.
    for key in ["matmul -> [3, 5]", "relu -> [3, 5]"] {
        let e = rows.iter().find(|r| r.0 == key).unwrap_or_else(|| panic!("{key} missing from {rows:?}"));
        assert!(e.1.calls >= 1 && e.1.seconds >= 0.0);
    }
}

//! Pooling, nearest upsampling and repeat_interleave on CUDA against the CPU: output and input
//! gradient for max pooling (ResNet's 3x3/s2/p1 on odd and even sizes, ties, all-negative
//! inputs), average pooling with padding, adaptive and global average pooling.

use super::{assert_close, gpu, uniform};
use spark_engine::{DType, Device, Error, Tensor};

fn rand(shape: &[usize], lo: f32, hi: f32, seed: u64) -> Tensor {
    Tensor::from_vec(uniform(shape.iter().product(), lo, hi, seed), shape).unwrap()
}

/// Runs `f(x)` on both devices with one fixed upstream gradient and compares the output and
/// the input gradient (`atol` / `rtol` for both; the output of a max pool must match exactly).
fn compare(what: &str, x: &Tensor, atol: f64, rtol: f64, f: impl Fn(&Tensor) -> Tensor) {
    let cuda = Device::Cuda(0);
    let cx = x.to_variable();
    let y = f(&cx);
    let gy = rand(y.dims(), -1.0, 1.0, 99);
    let grads = y.backward_with(&gy).unwrap();
    let gx = x.to_device(cuda).unwrap().to_variable();
    let yg = f(&gx);
    assert_eq!(yg.device(), cuda, "{what}: output device");
    assert_eq!(yg.dims(), y.dims(), "{what}: output shape");
    assert_close(&format!("{what}: output"), &yg.to_vec::<f32>().unwrap(), &y.to_vec_f64().unwrap(), atol, rtol);
    let ggrads = yg.backward_with(&gy.to_device(cuda).unwrap()).unwrap();
    let want = grads.get(&cx).unwrap().to_vec_f64().unwrap();
    let got = ggrads.get(&gx).unwrap_or_else(|| panic!("{what}: no input gradient on cuda"));
    assert_eq!(got.device(), cuda, "{what}: gradient device");
    assert_eq!(got.dims(), x.dims(), "{what}: gradient shape");
    assert_close(&format!("{what}: input gradient"), &got.to_vec::<f32>().unwrap(), &want, atol, rtol);
}

#[test]
fn max_pool2d_forward_and_backward_equal_the_cpu() {
    let Some(_dev) = gpu("max_pool2d") else { return };
    // (name, x shape, kernel, stride, padding)
    let cases: Vec<(&str, [usize; 4], usize, usize, usize)> = vec![
        ("3x3 s2 p1 (ResNet), odd 15x15", [2, 8, 15, 15], 3, 2, 1),
        ("3x3 s2 p1 (ResNet), even 16x16", [2, 8, 16, 16], 3, 2, 1),
        ("3x3 s2 p1 (ResNet), 112x112", [2, 4, 112, 112], 3, 2, 1),
        ("3x3 s2 p1, odd x even 9x12", [3, 5, 9, 12], 3, 2, 1),
        ("2x2 s2 p0", [2, 6, 10, 7], 2, 2, 0),
        ("3x3 s1 p1 (heavy overlap)", [2, 3, 8, 9], 3, 1, 1),
        ("3x3 s2 p0 (floor mode drops the border)", [1, 4, 10, 10], 3, 2, 0),
    ];
    for (i, (name, xs, k, s, p)) in cases.into_iter().enumerate() {
        let x = rand(&xs, -1.0, 1.0, 10 * i as u64);
        // Windows overlap: atomics may add an input's few gradients in another order.
        compare(name, &x, 1e-6, 1e-6, |x| x.max_pool2d(k, s, p).unwrap());
    }
    // All inputs negative: the padding must never win (it is -inf, not 0).
    let x = rand(&[2, 3, 11, 10], -2.0, -1.0, 7);
    compare("3x3 s2 p1, negative input", &x, 1e-6, 1e-6, |x| x.max_pool2d(3, 2, 1).unwrap());
    // A strided (transposed) view as input.
    let x = rand(&[2, 3, 9, 13], -1.0, 1.0, 8);
    compare("3x3 s2 p1, transposed view", &x, 1e-6, 1e-6, |x| x.transpose(2, 3).unwrap().max_pool2d(3, 2, 1).unwrap());
}

#[test]
fn max_pool2d_ties_route_the_gradient_as_the_cpu() {
    let Some(_dev) = gpu("max_pool2d ties") else { return };
    // Values in {0, 1, 2}, and the left half of every plane constant: most windows hold ties,
    // whose gradient goes to the first maximum in row-major order on both devices.
    let (n, c, h, w) = (2, 3, 12, 11);
    let mut v: Vec<f32> = uniform(n * c * h * w, 0.0, 3.0, 21).into_iter().map(f32::floor).collect();
    for (i, e) in v.iter_mut().enumerate() {
        if i % w < w / 2 {
            *e = 1.5;
        }
    }
    let x = Tensor::from_vec(v, &[n, c, h, w]).unwrap();
    for (k, s, p) in [(3, 2, 1), (2, 2, 0), (3, 1, 1), (3, 3, 0)] {
        let what = format!("ties, {k}x{k} s{s} p{p}");
        compare(&what, &x, 1e-6, 1e-6, |x| x.max_pool2d(k, s, p).unwrap());
    }
    // A wholly constant input: every window ties everywhere.
    let x = Tensor::from_vec(vec![0.25f32; 2 * 2 * 7 * 8], &[2, 2, 7, 8]).unwrap();
    compare("constant input, 3x3 s2 p1", &x, 1e-6, 1e-6, |x| x.max_pool2d(3, 2, 1).unwrap());
}

#[test]
fn avg_pool2d_forward_and_backward_equal_the_cpu() {
    let Some(_dev) = gpu("avg_pool2d") else { return };
    let cases: Vec<(&str, [usize; 4], usize, usize, usize)> = vec![
        ("3x3 s1 p1 (count_include_pad)", [2, 4, 9, 10], 3, 1, 1),
        ("3x3 s2 p1 (count_include_pad), odd", [2, 4, 15, 13], 3, 2, 1),
        ("2x2 s2 p0", [2, 6, 12, 8], 2, 2, 0),
        ("2x2 s2 p1", [1, 3, 7, 9], 2, 2, 1),
        ("5x5 s3 p2", [2, 2, 16, 17], 5, 3, 2),
    ];
    for (i, (name, xs, k, s, p)) in cases.into_iter().enumerate() {
        let x = rand(&xs, -1.0, 1.0, 100 + i as u64);
        compare(name, &x, 1e-6, 1e-5, |x| x.avg_pool2d(k, s, p).unwrap());
    }
}

#[test]
fn adaptive_and_global_avg_pool2d_equal_the_cpu() {
    let Some(_dev) = gpu("adaptive_avg_pool2d") else { return };
    // (name, x shape, output size)
    let cases: Vec<(&str, [usize; 4], [usize; 2])> = vec![
        ("to 1x1", [2, 8, 7, 7], [1, 1]),
        ("14x14 to 7x7 (divisible)", [2, 4, 14, 14], [7, 7]),
        ("10x9 to 7x7 (overlapping windows)", [2, 3, 10, 9], [7, 7]),
        ("13x11 to 3x5", [1, 5, 13, 11], [3, 5]),
        ("3x4 to 5x6 (output larger than input)", [2, 2, 3, 4], [5, 6]),
    ];
    for (i, (name, xs, [oh, ow])) in cases.into_iter().enumerate() {
        let x = rand(&xs, -1.0, 1.0, 200 + i as u64);
        compare(name, &x, 1e-6, 1e-5, |x| x.adaptive_avg_pool2d(oh, ow).unwrap());
    }
    for (i, xs) in [[2, 16, 7, 7], [3, 5, 6, 9], [1, 2, 1, 1]].into_iter().enumerate() {
        let x = rand(&xs, -1.0, 1.0, 300 + i as u64);
        compare(&format!("global {xs:?}"), &x, 1e-6, 1e-5, |x| x.global_avg_pool2d().unwrap());
    }
}

#[test]
fn upsample_nearest2d_and_repeat_interleave_equal_the_cpu() {
    let Some(_dev) = gpu("upsample_nearest2d") else { return };
    let cases: Vec<([usize; 4], usize, usize)> =
        vec![([2, 3, 5, 6], 2, 2), ([2, 3, 5, 7], 2, 3), ([1, 4, 3, 3], 3, 1), ([2, 2, 4, 4], 1, 1)];
    for (i, (xs, sy, sx)) in cases.into_iter().enumerate() {
        let x = rand(&xs, -1.0, 1.0, 400 + i as u64);
        compare(&format!("upsample {xs:?} by {sy}x{sx}"), &x, 1e-6, 1e-6, |x| x.upsample_nearest2d(sy, sx).unwrap());
    }
    let cases: Vec<(Vec<usize>, usize, isize)> =
        vec![(vec![2, 3, 4], 3, 1), (vec![2, 3, 4], 2, -1), (vec![5, 6], 4, 0), (vec![2, 7, 7], 1, 2)];
    for (i, (xs, r, dim)) in cases.into_iter().enumerate() {
        let x = rand(&xs, -1.0, 1.0, 500 + i as u64);
        compare(&format!("repeat_interleave {xs:?} x{r} dim {dim}"), &x, 1e-6, 1e-6, |x| {
            x.repeat_interleave(r, dim).unwrap()
        });
    }
}

#[test]
fn pooling_bf16_on_cuda_is_unsupported() {
    let Some(_dev) = gpu("pooling bf16") else { return };
    let x = rand(&[1, 2, 4, 4], -1.0, 1.0, 600).to_device(Device::Cuda(0)).unwrap().to_dtype(DType::BF16).unwrap();
    for (name, r) in [
        ("max_pool2d", x.max_pool2d(2, 2, 0)),
        ("avg_pool2d", x.avg_pool2d(2, 2, 0)),
        ("adaptive_avg_pool2d", x.adaptive_avg_pool2d(1, 1)),
        ("upsample_nearest2d", x.upsample_nearest2d(2, 2)),
    ] {
        assert!(matches!(r, Err(Error::UnsupportedDType { .. })), "{name}: bf16 on cuda must be refused");
    }
}

//! conv2d and conv_transpose2d on CUDA (im2col + GEMM, pointwise, grouped, depthwise) against
//! the CPU: output and the gradients of input, weight and bias.

use super::{assert_close, gpu, uniform};
use spark_engine::{Conv2dParams, ConvTranspose2dParams, Device, Tensor};

fn rand(shape: &[usize], seed: u64) -> Tensor {
    Tensor::from_vec(uniform(shape.iter().product(), -1.0, 1.0, seed), shape).unwrap()
}

/// Runs `f(x, w, b)` on both devices, with a fixed upstream gradient, and compares the output
/// and the three gradients.
fn compare(what: &str, x: Tensor, w: Tensor, b: Tensor, f: impl Fn(&Tensor, &Tensor, &Tensor) -> Tensor) {
    let cuda = Device::Cuda(0);
    let (cx, cw, cb) = (x.to_variable(), w.to_variable(), b.to_variable());
    let y = f(&cx, &cw, &cb);
    let gy = rand(y.dims(), 99);
    let grads = y.backward_with(&gy).unwrap();
    let (gx, gw, gb) = (
        x.to_device(cuda).unwrap().to_variable(),
        w.to_device(cuda).unwrap().to_variable(),
        b.to_device(cuda).unwrap().to_variable(),
    );
    let yg = f(&gx, &gw, &gb);
    assert_eq!(yg.device(), cuda);
    assert_eq!(yg.dims(), y.dims(), "{what}: output shape");
    // Sums of up to a few thousand products of values in [-1, 1].
    assert_close(&format!("{what}: output"), &yg.to_vec::<f32>().unwrap(), &y.to_vec_f64().unwrap(), 1e-4, 1e-4);
    let ggrads = yg.backward_with(&gy.to_device(cuda).unwrap()).unwrap();
    for (name, c, g) in [("input", &cx, &gx), ("weight", &cw, &gw), ("bias", &cb, &gb)] {
        let want = grads.get(c).unwrap().to_vec_f64().unwrap();
        let got = ggrads.get(g).unwrap_or_else(|| panic!("{what}: no {name} gradient on cuda"));
        let scale = want.iter().fold(1.0f64, |a, &v| a.max(v.abs()));
        assert_close(&format!("{what}: {name} gradient"), &got.to_vec::<f32>().unwrap(), &want, 2e-5 * scale, 1e-4);
    }
}

#[test]
fn conv2d_forward_and_backward_equal_the_cpu() {
    let Some(_dev) = gpu("conv2d") else { return };
    // (name, x shape, weight shape, params)
    let cases: Vec<(&str, [usize; 4], [usize; 4], Conv2dParams)> = vec![
        ("3x3 s1 p1", [2, 16, 13, 11], [24, 16, 3, 3], Conv2dParams::new(1, 1)),
        ("3x3 s2 p1", [3, 8, 15, 16], [16, 8, 3, 3], Conv2dParams::new(2, 1)),
        ("1x1 s1 (pointwise, no im2col)", [2, 32, 9, 7], [48, 32, 1, 1], Conv2dParams::new(1, 0)),
        ("1x1 s2 (downsample)", [2, 32, 9, 7], [64, 32, 1, 1], Conv2dParams::new(2, 0)),
        ("7x7 s2 p3 (stem)", [2, 3, 32, 30], [16, 3, 7, 7], Conv2dParams::new(2, 3)),
        ("3x3 dilation 2 p2", [1, 8, 12, 12], [8, 8, 3, 3], Conv2dParams::new(1, 2).with_dilation(2)),
        ("grouped 3x3, 4 groups", [2, 16, 10, 10], [32, 4, 3, 3], Conv2dParams::new(1, 1).with_groups(4)),
        ("depthwise 7x7 p3 (ConvNeXt)", [2, 24, 14, 14], [24, 1, 7, 7], Conv2dParams::new(1, 3).with_groups(24)),
        ("depthwise 3x3 s2 p1", [2, 12, 11, 9], [12, 1, 3, 3], Conv2dParams::new(2, 1).with_groups(12)),
        ("4x4 s4 (ConvNeXt stem)", [2, 3, 32, 32], [16, 3, 4, 4], Conv2dParams::new(4, 0)),
    ];
    for (i, (name, xs, ws, p)) in cases.into_iter().enumerate() {
        let s = 10 * i as u64;
        compare(name, rand(&xs, s), rand(&ws, s + 1), rand(&[ws[0]], s + 2), |x, w, b| {
            x.conv2d(w, Some(b), p).unwrap()
        });
    }
}

#[test]
fn conv_transpose2d_forward_and_backward_equal_the_cpu() {
    let Some(_dev) = gpu("conv_transpose2d") else { return };
    // SparK's decoder upsamples with 4x4 / stride 2 / padding 1; UNet-style 2x2 / stride 2 too.
    let cases: Vec<(&str, [usize; 4], [usize; 4], ConvTranspose2dParams)> = vec![
        ("4x4 s2 p1 (SparK decoder)", [2, 32, 7, 7], [32, 16, 4, 4], ConvTranspose2dParams::new(2, 1)),
        ("2x2 s2", [2, 16, 6, 5], [16, 8, 2, 2], ConvTranspose2dParams::new(2, 0)),
        ("3x3 s1 p1", [1, 8, 9, 9], [8, 12, 3, 3], ConvTranspose2dParams::new(1, 1)),
    ];
    for (i, (name, xs, ws, p)) in cases.into_iter().enumerate() {
        let s = 100 + 10 * i as u64;
        compare(name, rand(&xs, s), rand(&ws, s + 1), rand(&[ws[1]], s + 2), |x, w, b| {
            x.conv_transpose2d(w, Some(b), p).unwrap()
        });
    }
}

#[test]
fn bf16_autocast_convs_and_matmul_run_on_the_tensor_cores_within_bf16_error() {
    use spark_engine::{MatmulPrecision, PrecisionScope};
    let Some(_dev) = gpu("bf16 autocast conv") else { return };
    let cuda = Device::Cuda(0);
    // Operands rounded to bf16 (8 significant bits) and f32 accumulation: each product is off
    // by at most ~2^-8 relative, so a sum of K products of values in [-1, 1] by at most
    // K * 2^-8 and typically sqrt(K) * 2^-9. The exact bf16 GEMM is tested in gemm.rs; this
    // checks that the convs and matmul take it under autocast, forward and backward.
    let cases: Vec<(&str, [usize; 4], [usize; 4], Conv2dParams)> = vec![
        ("3x3 s1 p1", [2, 16, 13, 11], [24, 16, 3, 3], Conv2dParams::new(1, 1)),
        ("1x1", [2, 32, 9, 7], [48, 32, 1, 1], Conv2dParams::new(1, 0)),
        ("7x7 s2 p3", [2, 3, 32, 30], [16, 3, 7, 7], Conv2dParams::new(2, 3)),
    ];
    for (i, (name, xs, ws, p)) in cases.into_iter().enumerate() {
        let s = 200 + 10 * i as u64;
        let (x, w) = (rand(&xs, s), rand(&ws, s + 1));
        let (cx, cw) = (x.to_variable(), w.to_variable());
        let y = cx.conv2d(&cw, None, p).unwrap();
        let gy = rand(y.dims(), 99);
        let grads = y.backward_with(&gy).unwrap();
        let (gx, gw) = (x.to_device(cuda).unwrap().to_variable(), w.to_device(cuda).unwrap().to_variable());
        let f32_out = gx.conv2d(&gw, None, p).unwrap().to_vec::<f32>().unwrap();
        let _bf16 = PrecisionScope::new(MatmulPrecision::Bf16);
        let yg = gx.conv2d(&gw, None, p).unwrap();
        let ggrads = yg.backward_with(&gy.to_device(cuda).unwrap()).unwrap();
        drop(_bf16);
        let out = yg.to_vec::<f32>().unwrap();
        assert!(out.iter().zip(&f32_out).any(|(a, b)| a != b), "{name}: bf16 autocast changed nothing");
        let k = (ws[1] * ws[2] * ws[3]) as f64;
        let tol = 4.0 * k.sqrt() * 2f64.powi(-9);
        assert_close(&format!("bf16 {name}: output"), &out, &y.to_vec_f64().unwrap(), tol, 0.0);
        for (what, c, g) in [("input", &cx, &gx), ("weight", &cw, &gw)] {
            let want = grads.get(c).unwrap().to_vec_f64().unwrap();
            let got = ggrads.get(g).unwrap().to_vec::<f32>().unwrap();
            // Gradient sums run over output positions or channels: scale by their largest entry.
            let scale = want.iter().fold(1.0f64, |a, &v| a.max(v.abs()));
            assert_close(&format!("bf16 {name}: {what} gradient"), &got, &want, 0.02 * scale, 0.0);
        }
    }
    let (a, b) = (rand(&[3, 40, 70], 300), rand(&[70, 33], 301));
    let want = a.matmul(&b).unwrap().to_vec_f64().unwrap();
    let _bf16 = PrecisionScope::new(MatmulPrecision::Bf16);
    let got = a.to_device(cuda).unwrap().matmul(&b.to_device(cuda).unwrap()).unwrap();
    assert_close("bf16 matmul", &got.to_vec::<f32>().unwrap(), &want, 4.0 * 70f64.sqrt() * 2f64.powi(-9), 0.0);
}

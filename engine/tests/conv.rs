//! conv2d / conv_transpose2d: forward against a naive f64 loop, gradient checks for every
//! geometry (stride, padding, dilation, groups, depthwise, 1x1, output_padding), f32 vs f64
//! agreement on the fast (GEMM / depthwise) kernels, and the PyTorch golden vectors.

use spark_engine::cpu::conv::ConvGeom;
use spark_engine::cpu::conv_transpose::{subpixel_forward, use_subpixel};
use spark_engine::cpu::conv_winograd as winograd;
use spark_engine::testing::{assert_close, gradcheck, GradCheck};
use spark_engine::{Conv2dParams, ConvTranspose2dParams, DType, Device, Rng, Tensor};

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, 0.0, 1.0, &mut Rng::new(seed), DType::F64, Device::Cpu).unwrap()
}

/// Direct 7-loop convolution in f64 (the definition).
fn naive_conv(x: &Tensor, w: &Tensor, b: Option<&Tensor>, p: Conv2dParams) -> Vec<f64> {
    let (xd, wd) = (x.dims().to_vec(), w.dims().to_vec());
    let (xv, wv) = (x.to_vec_f64().unwrap(), w.to_vec_f64().unwrap());
    let bv = b.map(|b| b.to_vec_f64().unwrap());
    let (n, cin, h, wi) = (xd[0], xd[1], xd[2], xd[3]);
    let (cout, cin_g, kh, kw) = (wd[0], wd[1], wd[2], wd[3]);
    let cout_g = cout / p.groups;
    let oh = p.out_size(0, h, kh).unwrap();
    let ow = p.out_size(1, wi, kw).unwrap();
    let mut out = vec![0.0; n * cout * oh * ow];
    for ni in 0..n {
        for co in 0..cout {
            let gi = co / cout_g;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = bv.as_ref().map_or(0.0, |b| b[co]);
                    for ci in 0..cin_g {
                        let c = gi * cin_g + ci;
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * p.stride[0] + ky * p.dilation[0]) as isize - p.padding[0] as isize;
                                let ix = (ox * p.stride[1] + kx * p.dilation[1]) as isize - p.padding[1] as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wi as isize {
                                    continue;
                                }
                                s += xv[((ni * cin + c) * h + iy as usize) * wi + ix as usize]
                                    * wv[((co * cin_g + ci) * kh + ky) * kw + kx];
                            }
                        }
                    }
                    out[((ni * cout + co) * oh + oy) * ow + ox] = s;
                }
            }
        }
    }
    out
}

/// Transposed conv by its scatter definition: every input pixel adds w * x at
/// `o = i*stride - padding + k*dilation`.
fn naive_conv_transpose(x: &Tensor, w: &Tensor, b: Option<&Tensor>, p: ConvTranspose2dParams) -> Vec<f64> {
    let (xd, wd) = (x.dims().to_vec(), w.dims().to_vec());
    let (xv, wv) = (x.to_vec_f64().unwrap(), w.to_vec_f64().unwrap());
    let (n, cin, h, wi) = (xd[0], xd[1], xd[2], xd[3]);
    let (cout_g, kh, kw) = (wd[1], wd[2], wd[3]);
    let cin_g = cin / p.groups;
    let cout = cout_g * p.groups;
    let oh = p.out_size(0, h, kh).unwrap();
    let ow = p.out_size(1, wi, kw).unwrap();
    let mut out = vec![0.0; n * cout * oh * ow];
    if let Some(b) = b {
        let bv = b.to_vec_f64().unwrap();
        for (i, o) in out.iter_mut().enumerate() {
            *o = bv[(i / (oh * ow)) % cout];
        }
    }
    for ni in 0..n {
        for ci in 0..cin {
            let gi = ci / cin_g;
            for iy in 0..h {
                for ix in 0..wi {
                    let xval = xv[((ni * cin + ci) * h + iy) * wi + ix];
                    for co in 0..cout_g {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let oy = (iy * p.stride[0] + ky * p.dilation[0]) as isize - p.padding[0] as isize;
                                let ox = (ix * p.stride[1] + kx * p.dilation[1]) as isize - p.padding[1] as isize;
                                if oy < 0 || ox < 0 || oy >= oh as isize || ox >= ow as isize {
                                    continue;
                                }
                                let c = gi * cout_g + co;
                                out[((ni * cout + c) * oh + oy as usize) * ow + ox as usize] +=
                                    xval * wv[((ci * cout_g + co) * kh + ky) * kw + kx];
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// (input shape, weight shape, params) cases covering every geometry the issue lists.
fn conv_cases() -> Vec<(&'static str, [usize; 4], [usize; 4], Conv2dParams)> {
    vec![
        ("3x3 s1 p1", [2, 3, 6, 5], [4, 3, 3, 3], Conv2dParams::new(1, 1)),
        ("3x3 s2 p1", [2, 3, 7, 6], [4, 3, 3, 3], Conv2dParams::new(2, 1)),
        ("3x3 s1 p0 no-pad", [1, 2, 5, 5], [3, 2, 3, 3], Conv2dParams::new(1, 0)),
        ("3x3 dilation 2", [1, 2, 7, 7], [3, 2, 3, 3], Conv2dParams::new(1, 2).with_dilation(2)),
        ("groups 2", [2, 4, 5, 5], [6, 2, 3, 3], Conv2dParams::new(1, 1).with_groups(2)),
        ("depthwise 3x3", [2, 4, 6, 6], [4, 1, 3, 3], Conv2dParams::new(1, 1).with_groups(4)),
        ("depthwise 3x3 s2", [2, 3, 7, 7], [3, 1, 3, 3], Conv2dParams::new(2, 1).with_groups(3)),
        ("depthwise 7x7 p3", [1, 2, 8, 9], [2, 1, 7, 7], Conv2dParams::new(1, 3).with_groups(2)),
        (
            "depthwise 7x7 wide rows (4-vector blocks)",
            [2, 2, 6, 40],
            [2, 1, 7, 7],
            Conv2dParams::new(1, 3).with_groups(2),
        ),
        ("depthwise pad 3 > kernel span", [1, 2, 5, 5], [2, 1, 3, 3], Conv2dParams::new(1, 3).with_groups(2)),
        ("depthwise dilation 2", [1, 2, 7, 7], [2, 1, 3, 3], Conv2dParams::new(1, 2).with_dilation(2).with_groups(2)),
        ("1x1", [2, 5, 4, 3], [3, 5, 1, 1], Conv2dParams::new(1, 0)),
        ("1x1 single image", [1, 5, 4, 3], [3, 5, 1, 1], Conv2dParams::new(1, 0)),
        ("1x1 groups 2", [2, 4, 3, 3], [6, 2, 1, 1], Conv2dParams::new(1, 0).with_groups(2)),
        ("1x1 s2", [2, 5, 5, 4], [3, 5, 1, 1], Conv2dParams::new(2, 0)),
        (
            "asymmetric 2x3 s(2,1) p(1,0)",
            [1, 2, 6, 7],
            [3, 2, 2, 3],
            Conv2dParams { stride: [2, 1], padding: [1, 0], dilation: [1, 1], groups: 1 },
        ),
        ("7x7 s2 p3 stem", [1, 3, 9, 9], [4, 3, 7, 7], Conv2dParams::new(2, 3)),
    ]
}

#[test]
fn conv2d_forward_matches_naive() {
    for (i, (name, xs, ws, p)) in conv_cases().into_iter().enumerate() {
        let x = randn(&xs, 10 + i as u64);
        let w = randn(&ws, 100 + i as u64);
        let b = randn(&[ws[0]], 200 + i as u64);
        let y = x.conv2d(&w, Some(&b), p).unwrap();
        assert_close(name, &y.to_vec_f64().unwrap(), &naive_conv(&x, &w, Some(&b), p), 1e-10, 1e-10);
        // f32 through the SIMD GEMM / depthwise kernels.
        let y32 = x
            .to_dtype(DType::F32)
            .unwrap()
            .conv2d(&w.to_dtype(DType::F32).unwrap(), Some(&b.to_dtype(DType::F32).unwrap()), p)
            .unwrap();
        assert_close(name, &y32.to_vec_f64().unwrap(), &naive_conv(&x, &w, Some(&b), p), 1e-4, 1e-4);
    }
}

#[test]
fn conv2d_gradcheck_every_geometry() {
    for (i, (name, xs, ws, p)) in conv_cases().into_iter().enumerate() {
        let x = randn(&xs, 30 + i as u64);
        let w = randn(&ws, 130 + i as u64);
        let b = randn(&[ws[0]], 230 + i as u64);
        gradcheck(|t| t[0].conv2d(&t[1], Some(&t[2]), p), &[x.clone(), w.clone(), b], GradCheck::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        gradcheck(|t| t[0].conv2d(&t[1], None, p), &[x, w], GradCheck::default())
            .unwrap_or_else(|e| panic!("{name} (no bias): {e}"));
    }
}

/// The f32 kernels (implicit GEMM, flipped-kernel input gradient, depthwise) give the same
/// gradients as the gradient-checked f64 path, on every geometry.
#[test]
fn conv2d_f32_backward_matches_f64() {
    for (i, (name, xs, ws, p)) in conv_cases().into_iter().enumerate() {
        let run = |dt: DType| {
            let x = randn(&xs, 60 + i as u64).to_dtype(dt).unwrap().to_variable();
            let w = randn(&ws, 160 + i as u64).to_dtype(dt).unwrap().to_variable();
            let b = randn(&[ws[0]], 260 + i as u64).to_dtype(dt).unwrap().to_variable();
            let y = x.conv2d(&w, Some(&b), p).unwrap();
            let go = randn(y.dims(), 360 + i as u64).to_dtype(dt).unwrap();
            let gr = y.backward_with(&go).unwrap();
            [&x, &w, &b].map(|t| gr.get(t).unwrap().to_vec_f64().unwrap())
        };
        let (g32, g64) = (run(DType::F32), run(DType::F64));
        for (what, (a, e)) in ["grad_input", "grad_weight", "grad_bias"].iter().zip(g32.iter().zip(&g64)) {
            assert_close(&format!("{name} {what}"), a, e, 1e-4, 1e-4);
        }
    }
}

#[test]
fn conv_transpose2d_f32_backward_matches_f64() {
    for (i, (name, xs, ws, p)) in convt_cases().into_iter().enumerate() {
        let run = |dt: DType| {
            let x = randn(&xs, 70 + i as u64).to_dtype(dt).unwrap().to_variable();
            let w = randn(&ws, 170 + i as u64).to_dtype(dt).unwrap().to_variable();
            let y = x.conv_transpose2d(&w, None, p).unwrap();
            let go = randn(y.dims(), 370 + i as u64).to_dtype(dt).unwrap();
            let gr = y.backward_with(&go).unwrap();
            [&x, &w].map(|t| gr.get(t).unwrap().to_vec_f64().unwrap())
        };
        let (g32, g64) = (run(DType::F32), run(DType::F64));
        for (what, (a, e)) in ["grad_input", "grad_weight"].iter().zip(g32.iter().zip(&g64)) {
            assert_close(&format!("{name} {what}"), a, e, 1e-4, 1e-4);
        }
    }
}

#[test]
fn conv2d_gradcheck_non_contiguous_input() {
    // Input is a permuted view: the op must read it through its strides.
    let x = randn(&[2, 5, 4, 3], 1);
    let w = randn(&[4, 3, 3, 3], 2);
    gradcheck(
        |t| t[0].permute(&[0, 3, 2, 1])?.conv2d(&t[1], None, Conv2dParams::new(1, 1)),
        &[x, w],
        GradCheck::default(),
    )
    .unwrap();
}

fn convt_cases() -> Vec<(&'static str, [usize; 4], [usize; 4], ConvTranspose2dParams)> {
    let mut op = ConvTranspose2dParams::new(2, 1);
    op.output_padding = [1, 1];
    let mut dil = ConvTranspose2dParams::new(1, 1);
    dil.dilation = [2, 2];
    let mut grp = ConvTranspose2dParams::new(2, 0);
    grp.groups = 2;
    let mut dw = ConvTranspose2dParams::new(2, 1);
    dw.groups = 3;
    let mut asym = ConvTranspose2dParams::new(2, 1);
    asym.stride = [2, 3];
    asym.output_padding = [0, 2];
    vec![
        ("4x4 s2 p1 (SparK decoder)", [2, 3, 4, 5], [3, 2, 4, 4], ConvTranspose2dParams::new(2, 1)),
        ("3x3 s2 p1 output_padding 1", [1, 3, 4, 4], [3, 2, 3, 3], op),
        ("3x3 s1 p1 dilation 2", [1, 2, 5, 5], [2, 3, 3, 3], dil),
        ("2x2 s2 groups 2", [1, 4, 3, 3], [4, 3, 2, 2], grp),
        ("depthwise 4x4 s2", [1, 3, 4, 4], [3, 1, 4, 4], dw),
        ("asym stride (2,3) output_padding (0,2)", [1, 2, 3, 4], [2, 2, 3, 3], asym),
    ]
}

#[test]
fn conv_transpose2d_forward_matches_naive() {
    for (i, (name, xs, ws, p)) in convt_cases().into_iter().enumerate() {
        let x = randn(&xs, 40 + i as u64);
        let w = randn(&ws, 140 + i as u64);
        let b = randn(&[ws[1] * p.groups], 240 + i as u64);
        let y = x.conv_transpose2d(&w, Some(&b), p).unwrap();
        let expect = naive_conv_transpose(&x, &w, Some(&b), p);
        assert_close(name, &y.to_vec_f64().unwrap(), &expect, 1e-10, 1e-10);
        let y32 = x
            .to_dtype(DType::F32)
            .unwrap()
            .conv_transpose2d(&w.to_dtype(DType::F32).unwrap(), Some(&b.to_dtype(DType::F32).unwrap()), p)
            .unwrap();
        assert_close(name, &y32.to_vec_f64().unwrap(), &expect, 1e-4, 1e-4);
    }
}

/// The conv2d geometry a transposed conv is the adjoint of (what `conv_transpose2d` builds).
fn adjoint_geom(xs: [usize; 4], ws: [usize; 4], p: ConvTranspose2dParams) -> ConvGeom {
    ConvGeom {
        n: xs[0],
        cin: ws[1] * p.groups,
        h: p.out_size(0, xs[2], ws[2]).unwrap(),
        w: p.out_size(1, xs[3], ws[3]).unwrap(),
        cout: xs[1],
        kh: ws[2],
        kw: ws[3],
        oh: xs[2],
        ow: xs[3],
        stride: p.stride,
        pad: p.padding,
        dil: p.dilation,
        groups: p.groups,
    }
}

/// The f32 sub-pixel kernel (phases stacked over one shared window im2col, then a pixel
/// shuffle) against the scatter definition, called directly on every stride 2/3, kernel 2..5,
/// padding 0..2 combination (output_padding, groups, bias and batch varying with it) on odd
/// sizes, and through `conv_transpose2d` (which picks it on large maps, the adjoint path
/// elsewhere) on all of them plus large maps and channel counts spanning several GEMM blocks.
#[test]
fn conv_transpose2d_subpixel_f32_matches_naive() {
    // (name, input, weight, params, bias, conv_transpose2d must take the sub-pixel path)
    let mut cases: Vec<(String, [usize; 4], [usize; 4], ConvTranspose2dParams, bool, bool)> = Vec::new();
    let mut i = 0;
    for s in [2, 3] {
        for k in [2, 3, 4, 5] {
            for pad in [0, 1, 2] {
                let mut p = ConvTranspose2dParams::new(s, pad);
                p.output_padding = [i % s, (i + 1) % s];
                p.groups = 1 + i % 2;
                let n = [1, 3][i / 2 % 2];
                let (cin, cout_g) = (2 * p.groups, 3);
                let name = format!("k{k} s{s} p{pad} op{:?} groups {} n{n}", p.output_padding, p.groups);
                cases.push((name, [n, cin, 5, 7], [cin, cout_g, k, k], p, i % 3 != 0, false));
                i += 1;
            }
        }
    }
    let p = ConvTranspose2dParams::new(2, 1);
    let (mut g2, k2, mut s3, mut asym) = (p, ConvTranspose2dParams::new(2, 0), ConvTranspose2dParams::new(3, 1), p);
    g2.groups = 2;
    s3.output_padding = [2, 1];
    asym.stride = [3, 2];
    asym.padding = [2, 1];
    asym.output_padding = [2, 1];
    cases.extend([
        ("128->64 9x9 n2 (several GEMM blocks)".into(), [2, 128, 9, 9], [128, 64, 4, 4], p, true, false),
        ("asym k5 stride (3,2) op (2,1) 6x9 n2".into(), [2, 4, 6, 9], [4, 5, 5, 5], asym, true, false),
        ("4x4 s2 16->8 33x31 n2".into(), [2, 16, 33, 31], [16, 8, 4, 4], p, true, true),
        ("4x4 s2 groups 2 32->2x12 32x32".into(), [1, 32, 32, 32], [32, 12, 4, 4], g2, false, true),
        ("2x2 s2 24->8 40x40".into(), [1, 24, 40, 40], [24, 8, 2, 2], k2, true, true),
        ("3x3 s3 p1 op (2,1) 12->6 34x34".into(), [1, 12, 34, 34], [12, 6, 3, 3], s3, true, true),
    ]);
    let f32v = |t: &Tensor| t.to_vec_f64().unwrap().into_iter().map(|v| v as f32).collect::<Vec<f32>>();
    let f32t = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
    for (i, (name, xs, ws, p, with_bias, large)) in cases.into_iter().enumerate() {
        let x = randn(&xs, 80 + i as u64);
        let w = randn(&ws, 180 + i as u64);
        let b = with_bias.then(|| randn(&[ws[1] * p.groups], 280 + i as u64));
        let expect = naive_conv_transpose(&x, &w, b.as_ref(), p);
        let g = adjoint_geom(xs, ws, p);
        assert_eq!(use_subpixel(&g), large, "{name}: path choice");
        let mut y = vec![f32::NAN; g.in_len()];
        subpixel_forward(&f32v(&x), &f32v(&w), b.as_ref().map(f32v).as_deref(), &g, &mut y);
        let y: Vec<f64> = y.into_iter().map(f64::from).collect();
        assert_close(&format!("{name} (sub-pixel kernel)"), &y, &expect, 1e-4, 1e-4);
        let yt = f32t(&x).conv_transpose2d(&f32t(&w), b.as_ref().map(f32t).as_ref(), p).unwrap();
        assert_close(&format!("{name} (conv_transpose2d)"), &yt.to_vec_f64().unwrap(), &expect, 1e-4, 1e-4);
    }
}

#[test]
fn conv_transpose2d_gradcheck() {
    for (i, (name, xs, ws, p)) in convt_cases().into_iter().enumerate() {
        let x = randn(&xs, 50 + i as u64);
        let w = randn(&ws, 150 + i as u64);
        let b = randn(&[ws[1] * p.groups], 250 + i as u64);
        gradcheck(|t| t[0].conv_transpose2d(&t[1], Some(&t[2]), p), &[x, w, b], GradCheck::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn conv_shape_errors_name_the_op() {
    let x = randn(&[1, 3, 5, 5], 1);
    let e = x.conv2d(&randn(&[4, 2, 3, 3], 2), None, Conv2dParams::new(1, 1)).unwrap_err();
    assert!(e.to_string().contains("conv2d"), "{e}");
    let e = x.conv2d(&randn(&[4, 3, 7, 7], 2), None, Conv2dParams::new(1, 0)).unwrap_err();
    assert!(e.to_string().contains("conv2d"), "{e}");
    let e = x.conv2d(&randn(&[4, 3, 3, 3], 2), Some(&randn(&[3], 3)), Conv2dParams::new(1, 0)).unwrap_err();
    assert!(e.to_string().contains("bias"), "{e}");
    let e = x.conv2d(&randn(&[4, 3, 3, 3], 2), None, Conv2dParams::new(0, 0)).unwrap_err();
    assert!(e.to_string().contains("stride"), "{e}");
    let mut p = ConvTranspose2dParams::new(2, 1);
    p.output_padding = [2, 2];
    let e = x.conv_transpose2d(&randn(&[3, 2, 4, 4], 2), None, p).unwrap_err();
    assert!(e.to_string().contains("conv_transpose2d"), "{e}");
    let x32 = x.to_dtype(DType::F32).unwrap();
    assert!(x32.conv2d(&randn(&[4, 3, 3, 3], 2), None, Conv2dParams::new(1, 1)).is_err());
}

// ------------------------------------------------------------------ golden vectors (PyTorch)

struct Golden {
    bytes: Vec<u8>,
}

impl Golden {
    fn load(name: &str) -> Golden {
        let path = format!("{}/../tests/data/golden/{name}", env!("CARGO_MANIFEST_DIR"));
        Golden { bytes: std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")) }
    }
    fn get(&self, name: &str) -> Tensor {
        let st = safetensors::SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
        let v: Vec<f32> = t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        Tensor::from_vec(v, t.shape()).unwrap()
    }
}

/// Runs `f(x, w, b)` on the file's f32 `input`/`weight`/`bias` as variables, backpropagates
/// `grad_out`, and compares output and the three gradients with the file.
fn golden_case(file: &str, f: impl Fn(&Tensor, &Tensor, &Tensor) -> Tensor, tol: [(f64, f64); 4]) {
    let g = Golden::load(file);
    let (x, w, b) = (g.get("input").to_variable(), g.get("weight").to_variable(), g.get("bias").to_variable());
    let y = f(&x, &w, &b);
    let grads = y.backward_with(&g.get("grad_out")).unwrap();
    let check = |what: &str, t: &Tensor, (atol, rtol): (f64, f64)| {
        assert_close(
            &format!("{file} {what}"),
            &t.to_vec_f64().unwrap(),
            &g.get(what).to_vec_f64().unwrap(),
            atol,
            rtol,
        )
    };
    check("output", &y, tol[0]);
    check("grad_input", grads.get(&x).unwrap(), tol[1]);
    check("grad_weight", grads.get(&w).unwrap(), tol[2]);
    check("grad_bias", grads.get(&b).unwrap(), tol[3]);
}

#[test]
fn golden_conv3x3_s1() {
    golden_case(
        "conv3x3_s1_masked.safetensors",
        |x, w, b| x.conv2d(w, Some(b), Conv2dParams::new(1, 1)).unwrap(),
        [(1e-5, 1e-4), (2e-5, 1e-4), (2e-3, 1e-4), (2e-3, 1e-5)],
    );
}

#[test]
fn golden_conv3x3_s2() {
    golden_case(
        "conv3x3_s2_masked.safetensors",
        |x, w, b| x.conv2d(w, Some(b), Conv2dParams::new(2, 1)).unwrap(),
        [(1e-5, 1e-4), (1e-5, 1e-4), (5e-4, 1e-4), (5e-4, 1e-5)],
    );
}

#[test]
fn golden_conv_transpose4x4_s2() {
    golden_case(
        "convtranspose4x4_s2.safetensors",
        |x, w, b| x.conv_transpose2d(w, Some(b), ConvTranspose2dParams::new(2, 1)).unwrap(),
        [(1e-5, 1e-4), (2e-5, 1e-4), (5e-4, 1e-4), (5e-4, 1e-5)],
    );
}

// ------------------------------------------------------------------ timing (not a test)

/// Best-of-N wall time of the benchmark layers (batch 8, f32), forward and forward+backward.
/// `cargo test --release -p spark-engine --test conv -- --ignored --nocapture conv_timing`
#[test]
#[ignore]
fn conv_timing() {
    let cases: Vec<(&str, [usize; 4], [usize; 4], Conv2dParams)> = vec![
        ("conv3x3 64->64 56x56", [8, 64, 56, 56], [64, 64, 3, 3], Conv2dParams::new(1, 1)),
        ("conv3x3 256->256 14x14", [8, 256, 14, 14], [256, 256, 3, 3], Conv2dParams::new(1, 1)),
        ("conv1x1 256->64 56x56", [8, 256, 56, 56], [64, 256, 1, 1], Conv2dParams::new(1, 0)),
        ("dw7x7 96ch 56x56", [8, 96, 56, 56], [96, 1, 7, 7], Conv2dParams::new(1, 3).with_groups(96)),
        ("stem7x7s2 3->64 224x224", [8, 3, 224, 224], [64, 3, 7, 7], Conv2dParams::new(2, 3)),
    ];
    let f32r = |s: &[usize], seed| {
        Tensor::randn(s, 0.0, 1.0, &mut Rng::new(seed), DType::F32, Device::Cpu).unwrap().to_variable()
    };
    // (best wall ms, mean CPU ms per call over all threads)
    let best = |reps: usize, f: &mut dyn FnMut()| {
        f();
        let c0 = cpu_seconds();
        let wall = (0..reps)
            .map(|_| {
                let t = std::time::Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3
            })
            .fold(f64::MAX, f64::min);
        (wall, (cpu_seconds() - c0) * 1e3 / reps as f64)
    };
    for (name, xs, ws, p) in cases {
        let (x, w, b) = (f32r(&xs, 1), f32r(&ws, 2), f32r(&[ws[0]], 3));
        let fwd = best(10, &mut || {
            spark_engine::no_grad(|| x.conv2d(&w, Some(&b), p).unwrap());
        });
        let fb = best(10, &mut || {
            let y = x.conv2d(&w, Some(&b), p).unwrap();
            let g = y.ones_like().unwrap();
            let grads = y.backward_with(&g).unwrap();
            assert_eq!(grads.len(), 3);
        });
        let gflop = 2.0 * (xs[0] * ws[0] * ws[1] * ws[2] * ws[3]) as f64 * y_hw(&x, &w, p) as f64 / 1e9;
        println!(
            "{name}: fwd {:.2} ms (cpu {:.2} ms = {:.0} GF/s/cpu), fwd+bwd {:.2} ms (cpu {:.2} ms = {:.0} GF/s/cpu) threads {}",
            fwd.0,
            fwd.1,
            gflop / fwd.1 * 1e3,
            fb.0,
            fb.1,
            3.0 * gflop / fb.1 * 1e3,
            rayon::current_num_threads()
        );
    }
    let x = f32r(&[8, 768, 7, 7], 4);
    let w = f32r(&[768, 384, 4, 4], 5);
    let p = ConvTranspose2dParams::new(2, 1);
    let fwd = best(5, &mut || {
        spark_engine::no_grad(|| x.conv_transpose2d(&w, None, p).unwrap());
    });
    println!("convT4x4s2 768->384 7x7: fwd {:.2} ms (cpu {:.2} ms)", fwd.0, fwd.1);
}

fn y_hw(x: &Tensor, w: &Tensor, p: Conv2dParams) -> usize {
    p.out_size(0, x.dims()[2], w.dims()[2]).unwrap() * p.out_size(1, x.dims()[3], w.dims()[3]).unwrap()
}

/// CPU time of this process (all threads) from /proc, in seconds.
fn cpu_seconds() -> f64 {
    let mut ns = 0u64;
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for e in dir.flatten() {
            if let Ok(s) = std::fs::read_to_string(e.path().join("schedstat")) {
                ns += s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            }
        }
    }
    ns as f64 * 1e-9
}

/// The Winograd F(2x2, 3x3) kernel itself against the naive definition on odd and even sizes,
/// paddings 0-2, few channels, tile blocks spanning several images, a 1x1 output and a map with
/// several blocks per image (whatever the dispatch rule would pick).
/// Winograd kernel shapes: paddings 0-2, few channels, odd sizes, tile blocks spanning several
/// images, a 1x1 output and a map with several blocks per image.
const WINOGRAD_CASES: [([usize; 4], usize, usize); 8] = [
    ([2, 3, 13, 10], 4, 1),
    ([3, 5, 7, 9], 2, 0),
    ([2, 4, 6, 5], 3, 2),
    ([5, 16, 4, 4], 20, 1),
    ([1, 2, 1, 1], 3, 1),
    ([2, 3, 3, 3], 2, 0),
    ([2, 48, 61, 30], 40, 1),
    ([16, 24, 6, 6], 16, 1),
];

fn winograd_geom(xs: [usize; 4], cout: usize, pad: usize) -> ConvGeom {
    ConvGeom {
        n: xs[0],
        cin: xs[1],
        h: xs[2],
        w: xs[3],
        cout,
        kh: 3,
        kw: 3,
        oh: xs[2] + 2 * pad - 2,
        ow: xs[3] + 2 * pad - 2,
        stride: [1, 1],
        pad: [pad, pad],
        dil: [1, 1],
        groups: 1,
    }
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32).unwrap().to_vec::<f32>().unwrap()
}

/// The Winograd kernel itself (whatever the dispatch rule would pick) against the definition.
#[test]
fn winograd_kernel_matches_naive() {
    for (i, (xs, cout, pad)) in WINOGRAD_CASES.into_iter().enumerate() {
        let p = Conv2dParams::new(1, pad);
        let x = randn(&xs, 70 + i as u64);
        let w = randn(&[cout, xs[1], 3, 3], 170 + i as u64);
        let b = randn(&[cout], 270 + i as u64);
        let g = winograd_geom(xs, cout, pad);
        let mut out = vec![f32::NAN; g.out_len()];
        winograd::forward(&f32s(&x), &f32s(&w), Some(&f32s(&b)), &g, &mut out);
        let got: Vec<f64> = out.iter().map(|&v| v as f64).collect();
        assert_close(
            &format!("winograd kernel {xs:?} -> {cout} pad {pad}"),
            &got,
            &naive_conv(&x, &w, Some(&b), p),
            1e-4,
            1e-4,
        );
    }
}

/// The Winograd weight gradient against `dW[co][ci][ky][kx] = Σ dY[n,co,oy,ox] x[n,ci,oy+ky-p,ox+kx-p]`
/// in f64, on the same shapes (odd sizes exercise the half tiles whose outputs are dropped).
#[test]
fn winograd_weight_grad_matches_naive() {
    for (i, (xs, cout, pad)) in WINOGRAD_CASES.into_iter().enumerate() {
        let g = winograd_geom(xs, cout, pad);
        let x = randn(&xs, 80 + i as u64);
        let dy = randn(&[g.n, cout, g.oh, g.ow], 180 + i as u64);
        let mut got = vec![f32::NAN; g.weight_len()];
        winograd::backward_weight(&f32s(&x), &f32s(&dy), &g, &mut got);
        let (xv, dyv) = (x.to_vec_f64().unwrap(), dy.to_vec_f64().unwrap());
        let mut want = vec![0.0f64; g.weight_len()];
        for n in 0..g.n {
            for co in 0..cout {
                for ci in 0..g.cin {
                    for k in 0..9 {
                        let (ky, kx) = (k / 3, k % 3);
                        let mut s = 0.0;
                        for oy in 0..g.oh {
                            for ox in 0..g.ow {
                                let (iy, ix) = ((oy + ky) as isize - pad as isize, (ox + kx) as isize - pad as isize);
                                if iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w {
                                    s += dyv[((n * cout + co) * g.oh + oy) * g.ow + ox]
                                        * xv[((n * g.cin + ci) * g.h + iy as usize) * g.w + ix as usize];
                                }
                            }
                        }
                        want[(co * g.cin + ci) * 9 + k] += s;
                    }
                }
            }
        }
        let got: Vec<f64> = got.iter().map(|&v| v as f64).collect();
        assert_close(&format!("winograd weight grad {xs:?} -> {cout} pad {pad}"), &got, &want, 1e-3, 1e-4);
    }
}

/// conv2d takes Winograd for 3x3 stride-1 convs with 16+ channels on 8x8+ maps, forward and
/// (as a conv of the output gradient with the flipped kernel) input gradient, and on the largest
/// case the weight gradient: f32 against the f64 path, which never uses it.
#[test]
fn winograd_conv2d_f32_matches_f64() {
    let cases: [([usize; 4], [usize; 4], usize); 4] = [
        ([2, 16, 13, 10], [24, 16, 3, 3], 1),
        ([3, 32, 10, 12], [16, 32, 3, 3], 0),
        ([2, 48, 61, 30], [40, 48, 3, 3], 1),
        // Enough work for the Winograd weight gradient too (weight_grad_pays_off).
        ([4, 64, 63, 64], [64, 64, 3, 3], 1),
    ];
    for (i, (xs, ws, pad)) in cases.into_iter().enumerate() {
        f32_matches_f64(&format!("winograd pad {pad}"), xs, ws, Conv2dParams::new(1, pad), 70 + i as u64);
    }
}

/// conv2d forward and input / weight gradients in f32 against f64 (different kernels: f64
/// always takes the materialised im2col).
fn f32_matches_f64(name: &str, xs: [usize; 4], ws: [usize; 4], p: Conv2dParams, seed: u64) {
    let run = |dt: DType| {
        let x = randn(&xs, seed).to_dtype(dt).unwrap().to_variable();
        let w = randn(&ws, seed + 100).to_dtype(dt).unwrap().to_variable();
        let y = x.conv2d(&w, None, p).unwrap();
        let go = randn(y.dims(), seed + 300).to_dtype(dt).unwrap();
        let gr = y.backward_with(&go).unwrap();
        [y.to_vec_f64().unwrap(), gr.get(&x).unwrap().to_vec_f64().unwrap(), gr.get(&w).unwrap().to_vec_f64().unwrap()]
    };
    let (g32, g64) = (run(DType::F32), run(DType::F64));
    for (what, (a, e)) in ["output", "grad_input", "grad_weight"].iter().zip(g32.iter().zip(&g64)) {
        // f32 rounding grows with the largest values (long sums whose terms cancel leave small
        // elements with the big ones' absolute error).
        let scale = e.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert_close(&format!("{name} {xs:?} {ws:?} {what}"), a, e, 1e-4, 1e-4f64.max(1e-5 * scale));
    }
}

/// Strided f32 convs (implicit GEMM, strided im2col packing) forward and all gradients against
/// the f64 path (materialised im2col): strides 2 and 3, asymmetric strides, dilation, groups,
/// odd sizes, a 7x7/s2 stem, and maps above and below the batching threshold.
#[test]
fn strided_f32_matches_f64() {
    let p = |s: [usize; 2], pad: [usize; 2], d: usize, groups: usize| Conv2dParams {
        stride: s,
        padding: pad,
        dilation: [d, d],
        groups,
    };
    let cases: [([usize; 4], [usize; 4], Conv2dParams); 6] = [
        ([2, 4, 11, 9], [4, 2, 3, 3], p([2, 2], [2, 2], 2, 2)),
        ([2, 3, 50, 47], [5, 3, 4, 4], p([2, 2], [1, 1], 1, 1)),
        ([2, 2, 10, 8], [3, 2, 3, 3], p([3, 3], [1, 1], 1, 1)),
        ([1, 3, 9, 12], [4, 3, 3, 2], p([3, 2], [0, 1], 1, 1)),
        ([3, 8, 7, 7], [6, 8, 1, 1], p([2, 2], [0, 0], 1, 1)),
        ([2, 3, 61, 60], [8, 3, 7, 7], p([2, 2], [3, 3], 1, 1)),
    ];
    for (i, (xs, ws, prm)) in cases.into_iter().enumerate() {
        f32_matches_f64(&format!("strided {prm:?}"), xs, ws, prm, 80 + i as u64);
    }
}

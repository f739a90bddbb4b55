//! Pooling: forward against naive definitions (PyTorch semantics), gradient checks, errors.

use spark_engine::testing::{assert_close, gradcheck, GradCheck};
use spark_engine::{DType, Device, Rng, Tensor};

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, 0.0, 1.0, &mut Rng::new(seed), DType::F64, Device::Cpu).unwrap()
}

/// Naive pooling: `reduce` over the in-bounds window, `div` = divisor given the window.
fn naive_pool(
    x: &Tensor,
    oh: usize,
    ow: usize,
    win: impl Fn(usize, usize, usize) -> (isize, isize),
    max: bool,
    div: impl Fn(usize, usize) -> f64,
) -> Vec<f64> {
    let d = x.dims().to_vec();
    let (h, w) = (d[2], d[3]);
    let v = x.to_vec_f64().unwrap();
    let mut out = Vec::new();
    for p in 0..d[0] * d[1] {
        for oy in 0..oh {
            for ox in 0..ow {
                let (ys, ye) = win(oy, h, oh);
                let (xs, xe) = win(ox, w, ow);
                let mut acc = if max { f64::NEG_INFINITY } else { 0.0 };
                for iy in ys.max(0)..ye.min(h as isize) {
                    for ix in xs.max(0)..xe.min(w as isize) {
                        let e = v[p * h * w + iy as usize * w + ix as usize];
                        acc = if max { acc.max(e) } else { acc + e };
                    }
                }
                out.push(if max { acc } else { acc / div(oy, ox) });
            }
        }
    }
    out
}

#[test]
fn max_pool_matches_naive_and_gradchecks() {
    for (i, &(k, s, p, hw)) in [(2, 2, 0, 6), (3, 2, 1, 7), (3, 1, 1, 5), (3, 2, 0, 8)].iter().enumerate() {
        let x = randn(&[2, 3, hw, hw + 1], i as u64);
        let y = x.max_pool2d(k, s, p).unwrap();
        let (oh, ow) = (y.dims()[2], y.dims()[3]);
        assert_eq!(oh, (hw + 2 * p - k) / s + 1);
        let win = |o: usize, _n: usize, _out: usize| ((o * s) as isize - p as isize, (o * s + k) as isize - p as isize);
        assert_close("max_pool2d", &y.to_vec_f64().unwrap(), &naive_pool(&x, oh, ow, win, true, |_, _| 1.0), 0.0, 0.0);
        gradcheck(|t| t[0].max_pool2d(k, s, p), &[x], GradCheck::default()).unwrap();
    }
}

#[test]
fn avg_pool_counts_padding_and_gradchecks() {
    for (i, &(k, s, p, hw)) in [(2, 2, 0, 6), (3, 2, 1, 7), (3, 1, 1, 5)].iter().enumerate() {
        let x = randn(&[2, 2, hw, hw], 10 + i as u64);
        let y = x.avg_pool2d(k, s, p).unwrap();
        let (oh, ow) = (y.dims()[2], y.dims()[3]);
        let win = |o: usize, _n: usize, _out: usize| ((o * s) as isize - p as isize, (o * s + k) as isize - p as isize);
        // count_include_pad=True: the divisor is always k*k here (floor mode).
        let expect = naive_pool(&x, oh, ow, win, false, |_, _| (k * k) as f64);
        assert_close("avg_pool2d", &y.to_vec_f64().unwrap(), &expect, 1e-12, 1e-12);
        gradcheck(|t| t[0].avg_pool2d(k, s, p), &[x], GradCheck::default()).unwrap();
    }
    // A padded corner: 3x3 window at (0,0) with padding 1 sees 4 real ones, divided by 9.
    let ones = Tensor::ones(&[1, 1, 4, 4], DType::F64, Device::Cpu).unwrap();
    let y = ones.avg_pool2d(3, 2, 1).unwrap().to_vec_f64().unwrap();
    assert!((y[0] - 4.0 / 9.0).abs() < 1e-12, "{y:?}");
}

#[test]
fn adaptive_avg_pool_uneven_windows_and_gradchecks() {
    for (i, &(h, w, oh, ow)) in
        [(7, 5, 3, 2), (6, 6, 4, 4), (5, 9, 5, 3), (4, 4, 1, 1), (3, 3, 5, 4)].iter().enumerate()
    {
        let x = randn(&[2, 3, h, w], 20 + i as u64);
        let y = x.adaptive_avg_pool2d(oh, ow).unwrap();
        assert_eq!(y.dims(), &[2, 3, oh, ow]);
        let win = |o: usize, n: usize, out: usize| ((o * n / out) as isize, ((o + 1) * n).div_ceil(out) as isize);
        let div = |oy: usize, ox: usize| {
            let (ys, ye) = win(oy, h, oh);
            let (xs, xe) = win(ox, w, ow);
            ((ye - ys) * (xe - xs)) as f64
        };
        let expect = naive_pool(&x, oh, ow, win, false, div);
        assert_close("adaptive_avg_pool2d", &y.to_vec_f64().unwrap(), &expect, 1e-12, 1e-12);
        gradcheck(|t| t[0].adaptive_avg_pool2d(oh, ow), &[x], GradCheck::default()).unwrap();
    }
}

#[test]
fn global_avg_pool_is_spatial_mean() {
    let x = randn(&[3, 4, 5, 6], 30);
    let y = x.global_avg_pool2d().unwrap();
    assert_eq!(y.dims(), &[3, 4]);
    let expect = x.mean(&[2, 3], false).unwrap();
    assert_close("global_avg_pool2d", &y.to_vec_f64().unwrap(), &expect.to_vec_f64().unwrap(), 1e-12, 1e-12);
    gradcheck(|t| t[0].global_avg_pool2d(), &[x.narrow(3, 1, 4).unwrap()], GradCheck::default()).unwrap();
    // f32 path too.
    let y32 = x.to_dtype(DType::F32).unwrap().global_avg_pool2d().unwrap();
    assert_close("global f32", &y32.to_vec_f64().unwrap(), &expect.to_vec_f64().unwrap(), 1e-6, 1e-6);
}

#[test]
fn pool_shape_errors_name_the_op() {
    let x = randn(&[1, 1, 4, 4], 1);
    assert!(x.max_pool2d(5, 1, 0).unwrap_err().to_string().contains("max_pool2d"));
    assert!(x.max_pool2d(2, 2, 2).unwrap_err().to_string().contains("padding"));
    assert!(x.avg_pool2d(0, 1, 0).unwrap_err().to_string().contains("avg_pool2d"));
    assert!(x.reshape(&[4, 4]).unwrap().global_avg_pool2d().unwrap_err().to_string().contains("global_avg_pool2d"));
    assert!(x.adaptive_avg_pool2d(0, 2).is_err());
}

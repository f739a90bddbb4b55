//! Elementwise, broadcast, strided-copy, cast and reduction kernels against the CPU engine.

use super::{assert_close, gpu, uniform};
use spark_engine::cuda::{Binary, Unary};
use spark_engine::{Device, Tensor};

fn cpu_unary(op: Unary, x: &Tensor) -> Tensor {
    match op {
        Unary::Relu => x.relu(),
        Unary::Relu6 => x.relu6(),
        Unary::Gelu => x.gelu(),
        Unary::Sigmoid => x.sigmoid(),
        Unary::Tanh => x.tanh(),
        Unary::Exp => x.exp(),
        Unary::Log => x.abs().unwrap().add_scalar(0.1).unwrap().log(),
        Unary::Sqrt => x.abs().unwrap().sqrt(),
        Unary::Rsqrt => x.abs().unwrap().add_scalar(0.1).unwrap().rsqrt(),
        Unary::Abs => x.abs(),
        Unary::Neg => x.neg(),
        Unary::Sqr => x.sqr(),
    }
    .unwrap()
}

#[test]
fn unary_kernels_and_their_gradients_equal_the_cpu() {
    let Some(dev) = gpu("unary") else { return };
    let n = 100_003;
    // Includes the kinks of ReLU / ReLU6 exactly.
    let mut xs = uniform(n, -8.0, 8.0, 1);
    xs[0] = 0.0;
    xs[1] = 6.0;
    let gs = uniform(n, -1.0, 1.0, 2);
    let x = Tensor::from_vec(xs.clone(), &[n]).unwrap();
    let g = Tensor::from_vec(gs.clone(), &[n]).unwrap();
    let (dx, dg) = (dev.upload(&xs).unwrap(), dev.upload(&gs).unwrap());
    use Unary::*;
    for op in [Relu, Relu6, Gelu, Sigmoid, Tanh, Exp, Log, Sqrt, Rsqrt, Abs, Neg, Sqr] {
        // Log / Rsqrt / Sqrt need positive inputs: feed the same transformed input to both sides.
        let (input, dinput) = match op {
            Log | Rsqrt => {
                let t = x.abs().unwrap().add_scalar(0.1).unwrap();
                (t.clone(), dev.upload(&t.to_vec::<f32>().unwrap()).unwrap())
            }
            Sqrt => {
                let t = x.abs().unwrap();
                (t.clone(), dev.upload(&t.to_vec::<f32>().unwrap()).unwrap())
            }
            _ => (x.clone(), dev.upload(&xs).unwrap()),
        };
        let want = cpu_unary(op, &x).to_vec_f64().unwrap();
        let got = dev.download(&dev.unary(op, &dinput, n).unwrap(), n).unwrap();
        assert_close(&format!("{op:?}"), &got, &want, 1e-6, 2e-6);
        if matches!(op, Relu | Relu6 | Gelu | Sigmoid | Tanh) {
            let v = input.to_variable();
            let y = cpu_unary(op, &v);
            let want = y.backward_with(&g).unwrap().get(&v).unwrap().to_vec_f64().unwrap();
            let got = dev.download(&dev.unary_backward(op, &dx, &dg, n).unwrap(), n).unwrap();
            assert_close(&format!("{op:?} backward"), &got, &want, 1e-6, 2e-6);
        }
    }
    let got = dev.download(&dev.affine(&dx, 0.5, -2.0, n).unwrap(), n).unwrap();
    assert_close("affine", &got, &x.affine(0.5, -2.0).unwrap().to_vec_f64().unwrap(), 1e-6, 1e-6);
}

#[test]
fn binary_ops_same_shape_broadcast_and_strided_equal_the_cpu() {
    let Some(_dev) = gpu("binary") else { return };
    let cuda = Device::Cuda(0);
    let a = Tensor::from_vec(uniform(2 * 3 * 5 * 7, -2.0, 2.0, 3), &[2, 3, 5, 7]).unwrap();
    let b = Tensor::from_vec(uniform(2 * 3 * 5 * 7, 0.5, 2.0, 4), &[2, 3, 5, 7]).unwrap();
    let bias = Tensor::from_vec(uniform(3, -1.0, 1.0, 5), &[1, 3, 1, 1]).unwrap();
    let row = Tensor::from_vec(uniform(7, -1.0, 1.0, 6), &[7]).unwrap();
    let (ga, gb, gbias, grow) = (
        a.to_device(cuda).unwrap(),
        b.to_device(cuda).unwrap(),
        bias.to_device(cuda).unwrap(),
        row.to_device(cuda).unwrap(),
    );
    type F = fn(&Tensor, &Tensor) -> spark_engine::Result<Tensor>;
    let ops: [(&str, F); 6] = [
        ("add", Tensor::add),
        ("sub", Tensor::sub),
        ("mul", Tensor::mul),
        ("div", Tensor::div),
        ("max", Tensor::maximum),
        ("min", Tensor::minimum),
    ];
    for (name, f) in ops {
        for (what, x, y, gx, gy) in [
            ("same shape", &a, &b, &ga, &gb),
            ("channel bias", &a, &bias, &ga, &gbias),
            ("last-dim row", &a, &row, &ga, &grow),
        ] {
            let want = f(x, y).unwrap().to_vec_f64().unwrap();
            let got = f(gx, gy).unwrap();
            assert_eq!(got.device(), cuda);
            assert_close(&format!("{name} {what}"), &got.to_vec::<f32>().unwrap(), &want, 1e-6, 1e-6);
        }
        // A permuted (strided) operand and a scalar.
        let (p, gp) = (a.permute(&[0, 2, 1, 3]).unwrap(), ga.permute(&[0, 2, 1, 3]).unwrap());
        let want = f(&p, &row).unwrap().to_vec_f64().unwrap();
        assert_close(&format!("{name} permuted"), &f(&gp, &grow).unwrap().to_vec::<f32>().unwrap(), &want, 1e-6, 1e-6);
    }
    let _ = Binary::Add;
    // Strided copies: a permuted view and a narrowed one.
    let want = a.permute(&[3, 1, 0, 2]).unwrap().contiguous().unwrap().to_vec_f64().unwrap();
    let got = ga.permute(&[3, 1, 0, 2]).unwrap().contiguous().unwrap().to_vec::<f32>().unwrap();
    assert_close("permute copy", &got, &want, 0.0, 0.0);
    let want = a.narrow(2, 1, 3).unwrap().contiguous().unwrap().to_vec_f64().unwrap();
    let got = ga.narrow(2, 1, 3).unwrap().contiguous().unwrap().to_vec::<f32>().unwrap();
    assert_close("narrow copy", &got, &want, 0.0, 0.0);
}

#[test]
fn reductions_equal_the_cpu() {
    let Some(dev) = gpu("reductions") else { return };
    let cuda = Device::Cuda(0);
    let x = Tensor::from_vec(uniform(4 * 33 * 65, -3.0, 3.0, 7), &[4, 33, 65]).unwrap();
    let gx = x.to_device(cuda).unwrap();
    for dims in [vec![2isize], vec![1], vec![0], vec![0, 2], vec![0, 1, 2]] {
        let want = x.sum(&dims, false).unwrap().to_vec_f64().unwrap();
        assert_close(
            &format!("sum {dims:?}"),
            &gx.sum(&dims, false).unwrap().to_vec::<f32>().unwrap(),
            &want,
            1e-4,
            1e-5,
        );
        let want = x.mean(&dims, true).unwrap().to_vec_f64().unwrap();
        assert_close(
            &format!("mean {dims:?}"),
            &gx.mean(&dims, true).unwrap().to_vec::<f32>().unwrap(),
            &want,
            1e-5,
            1e-5,
        );
        let want = x.max(&dims, false).unwrap().to_vec_f64().unwrap();
        assert_close(
            &format!("max {dims:?}"),
            &gx.max(&dims, false).unwrap().to_vec::<f32>().unwrap(),
            &want,
            0.0,
            0.0,
        );
    }
    // Sum of squares over a long vector (the gradient-norm pass), in a fixed order.
    let n = 3_000_017;
    let v = uniform(n, -1.0, 1.0, 8);
    let want: f64 = v.iter().map(|&a| (a as f64) * (a as f64)).sum();
    let d = dev.upload(&v).unwrap();
    let first = dev.download(&dev.sum_of_squares(&d, n).unwrap(), 1).unwrap();
    let again = dev.download(&dev.sum_of_squares(&d, n).unwrap(), 1).unwrap();
    assert_close("sum of squares", &first, &[want], 0.0, 1e-5);
    assert_eq!(first, again, "the sum of squares is deterministic");
}

#[test]
fn casts_round_to_nearest_even_like_the_cpu() {
    let Some(dev) = gpu("casts") else { return };
    let mut v = uniform(10_000, -100.0, 100.0, 9);
    v.extend([0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, 1.0 + f32::EPSILON, 3.0e38, 1.0e-40]);
    let want: Vec<u16> = v.iter().map(|&x| half::bf16::from_f32(x).to_bits()).collect();
    let d = dev.upload(&v).unwrap();
    let bits = dev.cast_to_bf16(&d.slice(..), v.len()).unwrap();
    assert_eq!(dev.download(&bits, v.len()).unwrap(), want);
    let back = dev.download(&dev.cast_to_f32(&bits, v.len()).unwrap(), v.len()).unwrap();
    let want_back: Vec<f32> = want.iter().map(|&b| half::bf16::from_bits(b).to_f32()).collect();
    assert_eq!(back, want_back);
}

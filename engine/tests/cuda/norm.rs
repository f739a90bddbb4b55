//! BatchNorm (train and eval, running statistics) and LayerNorm (last dims, channels-first)
//! on CUDA against the CPU, forward and every gradient.

use super::{assert_close, gpu, uniform};
use spark_engine::{Device, Tensor};

fn rand(shape: &[usize], lo: f32, hi: f32, seed: u64) -> Tensor {
    Tensor::from_vec(uniform(shape.iter().product(), lo, hi, seed), shape).unwrap()
}

/// `f(x, params)` on both devices with the same upstream gradient: output and all gradients.
fn compare(what: &str, x: &Tensor, params: &[Tensor], f: impl Fn(&Tensor, &[Tensor]) -> Tensor) {
    let cuda = Device::Cuda(0);
    let cx = x.to_variable();
    let cp: Vec<Tensor> = params.iter().map(|p| p.to_variable()).collect();
    let y = f(&cx, &cp);
    let gy = rand(y.dims(), -1.0, 1.0, 77);
    let grads = y.backward_with(&gy).unwrap();
    let gx = x.to_device(cuda).unwrap().to_variable();
    let gp: Vec<Tensor> = params.iter().map(|p| p.to_device(cuda).unwrap().to_variable()).collect();
    let yg = f(&gx, &gp);
    assert_eq!(yg.device(), cuda);
    assert_close(&format!("{what}: output"), &yg.to_vec::<f32>().unwrap(), &y.to_vec_f64().unwrap(), 1e-5, 1e-4);
    let ggrads = yg.backward_with(&gy.to_device(cuda).unwrap()).unwrap();
    for (i, (c, g)) in std::iter::once((&cx, &gx)).chain(cp.iter().zip(&gp)).enumerate() {
        let want = grads.get(c).unwrap().to_vec_f64().unwrap();
        let got = ggrads.get(g).unwrap_or_else(|| panic!("{what}: no gradient for input {i} on cuda"));
        let scale = want.iter().fold(1.0f64, |a, &v| a.max(v.abs()));
        assert_close(
            &format!("{what}: gradient of input {i}"),
            &got.to_vec::<f32>().unwrap(),
            &want,
            1e-5 * scale,
            1e-4,
        );
    }
}

#[test]
fn batch_norm_train_and_eval_equal_the_cpu() {
    let Some(_dev) = gpu("batch_norm") else { return };
    let cuda = Device::Cuda(0);
    // A shifted input (|mean| >> std) checks the two-pass statistics.
    for (i, shape) in [[4usize, 16, 9, 7], [2, 3, 1, 1], [8, 64, 14, 14]].iter().enumerate() {
        let x = rand(shape, 2.0, 4.0, i as u64);
        let (w, b) = (rand(&[shape[1]], 0.5, 1.5, 10), rand(&[shape[1]], -0.5, 0.5, 11));
        for training in [true, false] {
            let (rm_c, rv_c) = (rand(&[shape[1]], 2.5, 3.5, 12), rand(&[shape[1]], 0.1, 0.5, 13));
            let (rm_g, rv_g) = (rm_c.to_device(cuda).unwrap(), rv_c.to_device(cuda).unwrap());
            let what = format!("batch_norm {shape:?} training {training}");
            // The running buffers are updated once per call; pick them by device.
            let f = |x: &Tensor, p: &[Tensor]| {
                let (rm, rv) = if x.device().is_cpu() { (&rm_c, &rv_c) } else { (&rm_g, &rv_g) };
                x.batch_norm(Some(&p[0]), Some(&p[1]), Some(rm), Some(rv), training, 0.1, 1e-5).unwrap()
            };
            compare(&what, &x, &[w.clone(), b.clone()], f);
            assert_close(
                &format!("{what}: running mean"),
                &rm_g.to_vec::<f32>().unwrap(),
                &rm_c.to_vec_f64().unwrap(),
                1e-6,
                1e-5,
            );
            assert_close(
                &format!("{what}: running var"),
                &rv_g.to_vec::<f32>().unwrap(),
                &rv_c.to_vec_f64().unwrap(),
                1e-6,
                1e-5,
            );
        }
    }
    // No affine parameters.
    let x = rand(&[3, 5, 4, 4], -1.0, 1.0, 20);
    compare("batch_norm without affine", &x, &[], |x, _| {
        x.batch_norm(None, None, None, None, true, 0.1, 1e-5).unwrap()
    });
}

#[test]
fn layer_norm_rows_and_channels_first_equal_the_cpu() {
    let Some(_dev) = gpu("layer_norm") else { return };
    for (i, (shape, k)) in
        [(vec![6usize, 7, 96], 1usize), (vec![5, 4, 3, 33], 2), (vec![70_001, 8], 1)].into_iter().enumerate()
    {
        let x = rand(&shape, -2.0, 3.0, 30 + i as u64);
        let nshape = &shape[shape.len() - k..];
        let (w, b) = (rand(nshape, 0.5, 1.5, 31), rand(nshape, -0.5, 0.5, 32));
        compare(&format!("layer_norm {shape:?} over {k} dims"), &x, &[w, b], |x, p| {
            x.layer_norm(k, Some(&p[0]), Some(&p[1]), 1e-6).unwrap()
        });
    }
    for (i, shape) in [[2usize, 96, 14, 14], [3, 5, 1, 7]].iter().enumerate() {
        let x = rand(shape, -2.0, 3.0, 40 + i as u64);
        let (w, b) = (rand(&[shape[1]], 0.5, 1.5, 41), rand(&[shape[1]], -0.5, 0.5, 42));
        compare(&format!("layer_norm_channels_first {shape:?}"), &x, &[w, b], |x, p| {
            x.layer_norm_channels_first(Some(&p[0]), Some(&p[1]), 1e-6).unwrap()
        });
    }
    let x = rand(&[9, 40], -1.0, 1.0, 50);
    compare("layer_norm without affine", &x, &[], |x, _| x.layer_norm(1, None, None, 1e-5).unwrap());
}

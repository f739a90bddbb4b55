//! Tensors on the GPU: moving both ways, and a small network's loss and every gradient through
//! autograd on CUDA equal to the same computation on the CPU.

use super::{assert_close, gpu, uniform};
use spark_engine::{DType, Device, Tensor};

#[test]
fn tensors_move_to_the_gpu_and_back_unchanged() {
    let Some(dev) = gpu("to_device") else { return };
    let cuda = Device::Cuda(0);
    let v = uniform(1000, -5.0, 5.0, 70);
    let t = Tensor::from_vec(v.clone(), &[10, 100]).unwrap();
    let g = t.to_device(cuda).unwrap();
    assert_eq!(g.device(), cuda);
    assert_eq!(g.to_device(Device::Cpu).unwrap().to_vec::<f32>().unwrap(), v);
    let bf = t.to_dtype(DType::BF16).unwrap();
    let gbf = bf.to_device(cuda).unwrap();
    assert_eq!(gbf.dtype(), DType::BF16);
    let back = gbf.to_device(Device::Cpu).unwrap().to_vec_f64().unwrap();
    assert_eq!(back, bf.to_vec_f64().unwrap());
    // Casting on the device equals casting on the host.
    let cast = g.to_dtype(DType::BF16).unwrap().to_dtype(DType::F32).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(cast, bf.to_dtype(DType::F32).unwrap().to_vec::<f32>().unwrap());
    let z = Tensor::full(2.5, &[3, 4], DType::F32, cuda).unwrap();
    assert_eq!(z.to_vec::<f32>().unwrap(), vec![2.5; 12]);
    // f64 has no CUDA storage: a typed error, not a panic.
    let e = t.to_dtype(DType::F64).unwrap().to_device(cuda).unwrap_err();
    assert!(e.to_string().contains("F64"), "{e}");
    let (cur, peak) = dev.memory_bytes();
    assert!(peak >= cur && peak > 0, "memory counters {cur} / {peak}");
}

/// Loss of a two-layer MLP with GELU and ReLU, mean-squared against a target.
fn mlp_loss(x: &Tensor, w1: &Tensor, b1: &Tensor, w2: &Tensor, target: &Tensor) -> Tensor {
    let h = x.matmul(w1).unwrap().add(b1).unwrap().gelu().unwrap();
    let y = h.matmul(&w2.t().unwrap()).unwrap().relu().unwrap().tanh().unwrap();
    y.sub(target).unwrap().sqr().unwrap().mean_all().unwrap()
}

#[test]
fn an_mlp_forward_and_backward_on_cuda_equals_the_cpu() {
    let Some(_dev) = gpu("mlp") else { return };
    let cuda = Device::Cuda(0);
    let make = |shape: &[usize], seed: u64| {
        let n = shape.iter().product();
        Tensor::from_vec(uniform(n, -0.5, 0.5, seed), shape).unwrap()
    };
    let (x, w1, b1, w2, target) =
        (make(&[37, 130], 1), make(&[130, 257], 2), make(&[257], 3), make(&[19, 257], 4), make(&[37, 19], 5));
    let leaves = [&x, &w1, &b1, &w2];
    let cpu_vars: Vec<Tensor> = leaves.iter().map(|t| t.to_variable()).collect();
    let gpu_vars: Vec<Tensor> = leaves.iter().map(|t| t.to_device(cuda).unwrap().to_variable()).collect();
    let cpu_loss = mlp_loss(&cpu_vars[0], &cpu_vars[1], &cpu_vars[2], &cpu_vars[3], &target);
    let gpu_loss = mlp_loss(&gpu_vars[0], &gpu_vars[1], &gpu_vars[2], &gpu_vars[3], &target.to_device(cuda).unwrap());
    assert_eq!(gpu_loss.device(), cuda);
    let want = cpu_loss.to_vec_f64().unwrap();
    assert_close("loss", &gpu_loss.to_vec::<f32>().unwrap(), &want, 1e-6, 1e-5);
    let (gc, gg) = (cpu_loss.backward().unwrap(), gpu_loss.backward().unwrap());
    for (i, (c, g)) in cpu_vars.iter().zip(&gpu_vars).enumerate() {
        let gg = gg.get(g).unwrap_or_else(|| panic!("no gradient for leaf {i} on cuda"));
        assert_eq!(gg.device(), cuda);
        let want = gc.get(c).unwrap().to_vec_f64().unwrap();
        let scale = want.iter().fold(0.0f64, |a, &b| a.max(b.abs()));
        assert_close(&format!("gradient of leaf {i}"), &gg.to_vec::<f32>().unwrap(), &want, 1e-5 * scale, 1e-4);
    }
}

#[test]
fn a_cpu_tensor_moved_to_cuda_gets_its_gradient_on_the_cpu() {
    let Some(_dev) = gpu("to_device gradient") else { return };
    let x = Tensor::from_vec(vec![1.0f32, -2.0, 3.0], &[3]).unwrap().to_variable();
    let loss = x.to_device(Device::Cuda(0)).unwrap().sqr().unwrap().sum_all().unwrap();
    let g = loss.backward().unwrap();
    let gx = g.get(&x).unwrap();
    assert_eq!(gx.device(), Device::Cpu);
    assert_eq!(gx.to_vec::<f32>().unwrap(), vec![2.0, -4.0, 6.0]);
}

#[test]
fn softmax_over_any_dim_and_cross_entropy_through_autograd_equal_the_cpu() {
    let Some(_dev) = gpu("softmax/cross_entropy tensors") else { return };
    let cuda = Device::Cuda(0);
    let x = Tensor::from_vec(uniform(6 * 11 * 5, -4.0, 4.0, 90), &[6, 11, 5]).unwrap();
    let w = Tensor::from_vec(uniform(6 * 11 * 5, -1.0, 1.0, 91), &[6, 11, 5]).unwrap();
    for (dim, log) in [(2isize, false), (1, true), (0, false)] {
        let (cx, gx) = (x.to_variable(), x.to_device(cuda).unwrap().to_variable());
        let f = |t: &Tensor, w: &Tensor| {
            let y = if log { t.log_softmax(dim) } else { t.softmax(dim) }.unwrap();
            y.mul(w).unwrap().sum_all().unwrap()
        };
        let (lc, lg) = (f(&cx, &w), f(&gx, &w.to_device(cuda).unwrap()));
        assert_close(
            &format!("softmax dim {dim} log {log}"),
            &lg.to_vec::<f32>().unwrap(),
            &lc.to_vec_f64().unwrap(),
            1e-5,
            1e-5,
        );
        let (gc, gg) = (lc.backward().unwrap(), lg.backward().unwrap());
        let want = gc.get(&cx).unwrap().to_vec_f64().unwrap();
        assert_close(
            &format!("softmax dim {dim} log {log} gradient"),
            &gg.get(&gx).unwrap().to_vec::<f32>().unwrap(),
            &want,
            1e-5,
            1e-4,
        );
    }
    let logits = Tensor::from_vec(uniform(37 * 10, -3.0, 3.0, 92), &[37, 10]).unwrap();
    let targets: Vec<usize> = (0..37).map(|i| (i * 7) % 10).collect();
    for smoothing in [0.0, 0.1] {
        let (cx, gx) = (logits.to_variable(), logits.to_device(cuda).unwrap().to_variable());
        let (lc, lg) = (cx.cross_entropy(&targets, smoothing).unwrap(), gx.cross_entropy(&targets, smoothing).unwrap());
        assert_eq!(lg.device(), cuda);
        assert_close("cross entropy", &lg.to_vec::<f32>().unwrap(), &lc.to_vec_f64().unwrap(), 1e-6, 1e-5);
        // Scale the loss so the upstream gradient is not 1.
        let (gc, gg) =
            (lc.mul_scalar(3.0).unwrap().backward().unwrap(), lg.mul_scalar(3.0).unwrap().backward().unwrap());
        let want = gc.get(&cx).unwrap().to_vec_f64().unwrap();
        assert_close("cross entropy gradient", &gg.get(&gx).unwrap().to_vec::<f32>().unwrap(), &want, 1e-6, 1e-4);
    }
}

#[test]
fn a_weight_shared_across_a_batch_is_one_gemm_and_equals_the_cpu() {
    let Some(_dev) = gpu("batched matmul with a 2-D weight") else { return };
    let cuda = Device::Cuda(0);
    // ConvNeXt's pointwise layers: a channels-last permuted view times a transposed weight.
    let x = Tensor::from_vec(uniform(3 * 8 * 5 * 6, -1.0, 1.0, 95), &[3, 8, 5, 6]).unwrap();
    let w = Tensor::from_vec(uniform(7 * 8, -1.0, 1.0, 96), &[7, 8]).unwrap();
    let gy = Tensor::from_vec(uniform(3 * 5 * 6 * 7, -1.0, 1.0, 97), &[3, 5, 6, 7]).unwrap();
    let run = |device: Device| {
        let (xv, wv) = (x.to_device(device).unwrap().to_variable(), w.to_device(device).unwrap().to_variable());
        let y = xv.permute(&[0, 2, 3, 1]).unwrap().matmul(&wv.t().unwrap()).unwrap();
        let g = y.backward_with(&gy.to_device(device).unwrap()).unwrap();
        (y.to_vec_f64().unwrap(), g.get(&xv).unwrap().to_vec_f64().unwrap(), g.get(&wv).unwrap().to_vec_f64().unwrap())
    };
    let (c, g) = (run(Device::Cpu), run(cuda));
    let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    assert_close("output", &f32s(&g.0), &c.0, 1e-5, 1e-5);
    assert_close("input gradient", &f32s(&g.1), &c.1, 1e-5, 1e-5);
    assert_close("weight gradient", &f32s(&g.2), &c.2, 1e-5, 1e-5);
}

//! Row softmax / log-softmax, their gradients, and cross entropy with label smoothing against
//! the CPU engine (forward ops and autograd).

use super::{assert_close, gpu, uniform};
use spark_engine::Tensor;

#[test]
fn softmax_and_log_softmax_rows_and_their_gradients_equal_the_cpu() {
    let Some(dev) = gpu("softmax rows") else { return };
    // One class, widths below / at / across the 256-thread block, a long row, and more rows
    // than the 65535-block grid (blocks loop over rows).
    let shapes = [(3, 1), (5, 33), (2, 256), (64, 1000), (7, 4097), (70_000, 5)];
    for (i, &(r, c)) in shapes.iter().enumerate() {
        let n = r * c;
        let xs = uniform(n, -8.0, 8.0, 10 + i as u64);
        let gs = uniform(n, -1.0, 1.0, 20 + i as u64);
        let x = Tensor::from_vec(xs.clone(), &[r, c]).unwrap();
        let g = Tensor::from_vec(gs.clone(), &[r, c]).unwrap();
        let (dx, dg) = (dev.upload(&xs).unwrap(), dev.upload(&gs).unwrap());
        for log in [false, true] {
            let what = format!("{} [{r}, {c}]", if log { "log_softmax" } else { "softmax" });
            let v = x.to_variable();
            let y = if log { v.log_softmax(-1) } else { v.softmax(-1) }.unwrap();
            let got = dev.download(&dev.softmax_rows(&dx, r, c, log).unwrap(), n).unwrap();
            let atol = if log { 1e-5 } else { 1e-6 };
            assert_close(&what, &got, &y.to_vec_f64().unwrap(), atol, 1e-5);
            // The backward from the CPU's output, so that both sides start from the same y.
            let want = y.backward_with(&g).unwrap().get(&v).unwrap().to_vec_f64().unwrap();
            let dy = dev.upload(&y.to_vec::<f32>().unwrap()).unwrap();
            let got = dev.download(&dev.softmax_rows_backward(&dy, &dg, r, c, log).unwrap(), n).unwrap();
            assert_close(&format!("{what} backward"), &got, &want, 1e-5, 1e-5);
        }
    }
}

#[test]
fn cross_entropy_with_and_without_smoothing_and_its_gradient_equal_the_cpu() {
    let Some(dev) = gpu("cross entropy") else { return };
    for (i, &(r, c)) in [(4, 1), (37, 1000), (5, 4097), (70_000, 3)].iter().enumerate() {
        let n = r * c;
        let xs = uniform(n, -6.0, 6.0, 30 + i as u64);
        let labels: Vec<usize> = (0..r).map(|k| (k * 7919 + i) % c).collect();
        let x = Tensor::from_vec(xs.clone(), &[r, c]).unwrap();
        let dx = dev.upload(&xs).unwrap();
        let dl = dev.upload(&labels.iter().map(|&t| t as i32).collect::<Vec<i32>>()).unwrap();
        // The upstream gradient of each row's loss under the mean over rows.
        let gloss = dev.upload(&vec![(1.0 / r as f64) as f32; r]).unwrap();
        for eps in [0.0f64, 0.1] {
            let what = format!("cross entropy [{r}, {c}] smoothing {eps}");
            let per_row = dev.download(&dev.cross_entropy(&dx, &dl, eps as f32, r, c).unwrap(), r).unwrap();
            // Single rows through the CPU op (a sample of them when there are many).
            let sample: Vec<usize> = (0..r).step_by(r.div_ceil(50)).collect();
            let want: Vec<f64> = sample
                .iter()
                .map(|&k| {
                    x.narrow(0, k, 1).unwrap().cross_entropy(&labels[k..k + 1], eps).unwrap().to_scalar().unwrap()
                })
                .collect();
            let got: Vec<f32> = sample.iter().map(|&k| per_row[k]).collect();
            assert_close(&format!("{what} per row"), &got, &want, 1e-6, 1e-5);
            // The mean over every row, and the gradient of that mean.
            let v = x.to_variable();
            let loss = v.cross_entropy(&labels, eps).unwrap();
            let mean = per_row.iter().map(|&l| l as f64).sum::<f64>() / r as f64;
            assert_close(&format!("{what} mean"), &[mean as f32], &[loss.to_scalar().unwrap()], 1e-6, 1e-5);
            let want = loss.backward().unwrap().get(&v).unwrap().to_vec_f64().unwrap();
            let got = dev.cross_entropy_backward(&dx, &dl, eps as f32, &gloss, r, c).unwrap();
            assert_close(&format!("{what} backward"), &dev.download(&got, n).unwrap(), &want, 2e-6 / r as f64, 1e-5);
        }
    }
}

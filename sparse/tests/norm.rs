//! Sparse BatchNorm / LayerNorm: equal SparK's gather -> BN1d/LN -> scatter, forward and
//! backward, at every mask ratio; running statistics; eval mode; f64 gradient checks.

mod common;

use common::*;
use spark_engine::testing::{gradcheck, GradCheck};
use spark_engine::{DType, Rng, Tensor};
use spark_sparse::{sparse_batch_norm, sparse_layer_norm, ActiveSet, SparseTensor};
use std::sync::Arc;

/// Reference BN over rows `[n, c]` (training): returns (y, dx, dw, db, mean, biased var).
fn bn_ref(x: &[f64], n: usize, c: usize, w: &[f64], b: &[f64], g: &[f64], eps: f64) -> [Vec<f64>; 6] {
    let mut mean = vec![0.0; c];
    let mut var = vec![0.0; c];
    for ch in 0..c {
        mean[ch] = (0..n).map(|r| x[r * c + ch]).sum::<f64>() / n as f64;
        var[ch] = (0..n).map(|r| (x[r * c + ch] - mean[ch]).powi(2)).sum::<f64>() / n as f64;
    }
    let (mut y, mut dx, mut dw, mut db) = (vec![0.0; n * c], vec![0.0; n * c], vec![0.0; c], vec![0.0; c]);
    for ch in 0..c {
        let is = 1.0 / (var[ch] + eps).sqrt();
        let xh: Vec<f64> = (0..n).map(|r| (x[r * c + ch] - mean[ch]) * is).collect();
        for r in 0..n {
            y[r * c + ch] = xh[r] * w[ch] + b[ch];
            dw[ch] += g[r * c + ch] * xh[r];
            db[ch] += g[r * c + ch];
        }
        // d/dx of sum(g * y) through mean and var, written out term by term.
        for r in 0..n {
            let mut s = 0.0;
            for q in 0..n {
                let dxh_dx = ((r == q) as i32 as f64 - 1.0 / n as f64) * is - xh[q] * xh[r] * is / n as f64;
                s += g[q * c + ch] * w[ch] * dxh_dx;
            }
            dx[r * c + ch] = s;
        }
    }
    [y, dx, dw, db, mean, var]
}

fn set_for(rng: &mut Rng, ratio: f64) -> Arc<ActiveSet> {
    let m = random_mask(rng, 3, 5, 7, ratio);
    Arc::new(ActiveSet::from_mask(&m, 3, 5, 7).unwrap())
}

#[test]
fn batch_norm_train_matches_reference_and_updates_running_stats() {
    let mut rng = Rng::new(11);
    let c = 4;
    for &ratio in &RATIOS {
        for dtype in [DType::F32, DType::F64] {
            let set = set_for(&mut rng, ratio);
            let n = set.len();
            let (x, xv) = random_sparse(&mut rng, &set, c, dtype);
            let (wv, bv) = (randn_vec(&mut rng, c), randn_vec(&mut rng, c));
            let w = tensor(&wv, &[c], dtype).to_variable();
            let b = tensor(&bv, &[c], dtype).to_variable();
            let rm = tensor(&[0.0; 4], &[c], dtype);
            let rv = tensor(&[1.0; 4], &[c], dtype);
            let y = sparse_batch_norm(&x, Some(&w), Some(&b), Some(&rm), Some(&rv), true, 0.1, 1e-5).unwrap();
            assert!(Arc::ptr_eq(&y.active, &set));
            let gv = randn_vec(&mut rng, n * c);
            let grads = y.features.mul(&tensor(&gv, &[n, c], dtype)).unwrap().sum_all().unwrap().backward().unwrap();
            if n == 0 {
                assert_eq!(y.features.dims(), [0, c]);
                assert_eq!(rm.to_vec_f64().unwrap(), vec![0.0; 4], "N = 0 leaves running stats alone");
                continue;
            }
            let [ry, rdx, rdw, rdb, mean, var] = bn_ref(&xv, n, c, &wv, &bv, &gv, 1e-5);
            let t = tol(dtype);
            assert_rel("bn forward", &y.features.to_vec_f64().unwrap(), &ry, t);
            assert_rel("bn dx", &grads.get(&x.features).unwrap().to_vec_f64().unwrap(), &rdx, t);
            assert_rel("bn dw", &grads.get(&w).unwrap().to_vec_f64().unwrap(), &rdw, t);
            assert_rel("bn db", &grads.get(&b).unwrap().to_vec_f64().unwrap(), &rdb, t);
            let want_rm: Vec<f64> = mean.iter().map(|m| 0.1 * m).collect();
            let want_rv: Vec<f64> = var.iter().map(|v| 0.9 + 0.1 * v * n as f64 / (n - 1) as f64).collect();
            assert_rel("running mean", &rm.to_vec_f64().unwrap(), &want_rm, t);
            assert_rel("running var (unbiased)", &rv.to_vec_f64().unwrap(), &want_rv, t);
        }
    }
}

#[test]
fn batch_norm_eval_uses_running_stats() {
    let mut rng = Rng::new(12);
    let set = set_for(&mut rng, 0.6);
    let (x, xv) = random_sparse(&mut rng, &set, 3, DType::F64);
    let (rmv, rvv, wv, bv) = ([0.5, -1.0, 2.0], [2.0, 0.5, 1.5], [1.5, -0.5, 1.0], [0.1, 0.2, 0.3]);
    let rm = tensor(&rmv, &[3], DType::F64);
    let rv = tensor(&rvv, &[3], DType::F64);
    let w = tensor(&wv, &[3], DType::F64);
    let b = tensor(&bv, &[3], DType::F64);
    let y = sparse_batch_norm(&x, Some(&w), Some(&b), Some(&rm), Some(&rv), false, 0.1, 1e-5).unwrap();
    let want: Vec<f64> = xv
        .iter()
        .enumerate()
        .map(|(i, v)| (v - rmv[i % 3]) / (rvv[i % 3] + 1e-5f64).sqrt() * wv[i % 3] + bv[i % 3])
        .collect();
    assert_rel("bn eval", &y.features.to_vec_f64().unwrap(), &want, 1e-12);
    assert_eq!(rm.to_vec_f64().unwrap(), rmv.to_vec(), "eval does not touch running stats");
    let g = gradcheck(
        |xs| {
            let st = SparseTensor::new(xs[0].clone(), set.clone())?;
            Ok(sparse_batch_norm(&st, Some(&xs[1]), Some(&xs[2]), Some(&rm), Some(&rv), false, 0.1, 1e-5)?.features)
        },
        &[x.features.detach(), w, b],
        GradCheck::default(),
    );
    g.unwrap();
}

#[test]
fn gradcheck_batch_norm_train() {
    let mut rng = Rng::new(13);
    let set = set_for(&mut rng, 0.6);
    let (x, _) = random_sparse(&mut rng, &set, 3, DType::F64);
    let w = tensor(&randn_vec(&mut rng, 3), &[3], DType::F64);
    let b = tensor(&randn_vec(&mut rng, 3), &[3], DType::F64);
    gradcheck(
        |xs| {
            let st = SparseTensor::new(xs[0].clone(), set.clone())?;
            Ok(sparse_batch_norm(&st, Some(&xs[1]), Some(&xs[2]), None, None, true, 0.1, 1e-5)?.features)
        },
        &[x.features.detach(), w, b],
        GradCheck::default(),
    )
    .unwrap();
    // Without affine parameters.
    gradcheck(
        |xs| {
            let st = SparseTensor::new(xs[0].clone(), set.clone())?;
            Ok(sparse_batch_norm(&st, None, None, None, None, true, 0.1, 1e-5)?.features)
        },
        &[x.features.detach()],
        GradCheck::default(),
    )
    .unwrap();
}

#[test]
fn batch_norm_single_row_in_training_is_an_error() {
    let set = Arc::new(ActiveSet::from_mask(&[true, false, false, false], 1, 2, 2).unwrap());
    let x = SparseTensor::new(Tensor::from_vec(vec![1.0f32, 2.0], &[1, 2]).unwrap(), set).unwrap();
    let err = sparse_batch_norm(&x, None, None, None, None, true, 0.1, 1e-5).unwrap_err().to_string();
    assert!(err.contains("sparse_batch_norm"), "{err}");
}

#[test]
fn layer_norm_matches_reference_all_ratios() {
    let mut rng = Rng::new(14);
    let c = 5;
    for &ratio in &RATIOS {
        for dtype in [DType::F32, DType::F64] {
            let set = set_for(&mut rng, ratio);
            let n = set.len();
            let (x, xv) = random_sparse(&mut rng, &set, c, dtype);
            let (wv, bv) = (randn_vec(&mut rng, c), randn_vec(&mut rng, c));
            let w = tensor(&wv, &[c], dtype).to_variable();
            let b = tensor(&bv, &[c], dtype).to_variable();
            let y = sparse_layer_norm(&x, Some(&w), Some(&b), 1e-6).unwrap();
            let gv = randn_vec(&mut rng, n * c);
            let grads = y.features.mul(&tensor(&gv, &[n, c], dtype)).unwrap().sum_all().unwrap().backward().unwrap();
            // Reference: LN of each row = BN of its transpose (one "channel" of c samples).
            let (mut ry, mut rdx, mut rdw, mut rdb) = (vec![0.0; n * c], vec![0.0; n * c], vec![0.0; c], vec![0.0; c]);
            for r in 0..n {
                let xr = &xv[r * c..(r + 1) * c];
                let gr: Vec<f64> = (0..c).map(|ch| gv[r * c + ch] * wv[ch]).collect();
                let [yh, dx, ..] = bn_ref(xr, c, 1, &[1.0], &[0.0], &gr, 1e-6);
                for ch in 0..c {
                    ry[r * c + ch] = yh[ch] * wv[ch] + bv[ch];
                    rdx[r * c + ch] = dx[ch];
                    rdw[ch] += gv[r * c + ch] * yh[ch];
                    rdb[ch] += gv[r * c + ch];
                }
            }
            let t = tol(dtype);
            assert_rel("ln forward", &y.features.to_vec_f64().unwrap(), &ry, t);
            let get = |t: &Tensor| grads.get(t).map(|g| g.to_vec_f64().unwrap()).unwrap_or(vec![0.0; t.numel()]);
            assert_rel("ln dx", &get(&x.features), &rdx, t);
            assert_rel("ln dw", &get(&w), &rdw, t);
            assert_rel("ln db", &get(&b), &rdb, t);
        }
    }
}

#[test]
fn gradcheck_layer_norm() {
    let mut rng = Rng::new(15);
    let set = set_for(&mut rng, 0.6);
    let (x, _) = random_sparse(&mut rng, &set, 4, DType::F64);
    let w = tensor(&randn_vec(&mut rng, 4), &[4], DType::F64);
    let b = tensor(&randn_vec(&mut rng, 4), &[4], DType::F64);
    gradcheck(
        |xs| {
            let st = SparseTensor::new(xs[0].clone(), set.clone())?;
            Ok(sparse_layer_norm(&st, Some(&xs[1]), Some(&xs[2]), 1e-6)?.features)
        },
        &[x.features.detach(), w, b],
        GradCheck::default(),
    )
    .unwrap();
}

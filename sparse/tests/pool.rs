//! Sparse pooling: equals PyTorch's dense pool on the zero-filled input, then the output mask
//! (SparK's SparseMaxPooling / SparseAvgPooling), forward and backward; global average over
//! active sites only; f64 gradient checks.

mod common;

use common::*;
use spark_engine::testing::{gradcheck, GradCheck};
use spark_engine::{DType, Rng, Tensor};
use spark_sparse::{
    sparse_avg_pool2d, sparse_global_avg_pool, sparse_max_pool2d, ActiveSet, SparseContext, SparseTensor,
};
use std::sync::Arc;

fn check_pool(max: bool, k: usize, s: usize, p: usize, hierarchical: bool) {
    let mut rng = Rng::new(21 + max as u64);
    let c = 3;
    for &ratio in &RATIOS {
        for dtype in [DType::F32, DType::F64] {
            let (batch, fh, fw, scale) = (2, 3, 2, 4);
            let (set, mut ctx) = if hierarchical {
                let patch = random_mask(&mut rng, batch, fh, fw, ratio);
                let mut ctx = SparseContext::hierarchical(&patch, batch, fh, fw).unwrap();
                (ctx.active_set(batch, fh * scale, fw * scale).unwrap(), ctx)
            } else {
                let m = random_mask(&mut rng, batch, 9, 7, ratio);
                (Arc::new(ActiveSet::from_mask(&m, batch, 9, 7).unwrap()), SparseContext::generic())
            };
            let (x, xv) = random_sparse(&mut rng, &set, c, dtype);
            let y = if max {
                sparse_max_pool2d(&x, k, s, p, &mut ctx).unwrap()
            } else {
                sparse_avg_pool2d(&x, k, s, p, &mut ctx).unwrap()
            };
            let os = y.active.clone();
            let gv = randn_vec(&mut rng, os.len() * c);
            let grads =
                y.features.mul(&tensor(&gv, &[os.len(), c], dtype)).unwrap().sum_all().unwrap().backward().unwrap();
            let dims = [batch, c, set.h(), set.w()];
            let gy = densify(&gv, &os, c);
            let (yd, gx, oh, ow) = pool_ref(&densify(&xv, &set, c), dims, k, s, p, max, &gy);
            assert_eq!((os.h(), os.w()), (oh, ow));
            let t = tol(dtype);
            let what = format!("{} pool k{k} s{s} p{p} ratio {ratio}", if max { "max" } else { "avg" });
            assert_rel(&format!("{what} forward"), &y.features.to_vec_f64().unwrap(), &rows_of(&yd, &os, c), t);
            let got = grads.get(&x.features).map(|g| g.to_vec_f64().unwrap()).unwrap_or(vec![0.0; set.len() * c]);
            assert_rel(&format!("{what} grad"), &got, &rows_of(&gx, &set, c), t);
        }
    }
}

#[test]
fn max_pool_3x3_s2_matches_dense_masked() {
    check_pool(true, 3, 2, 1, true); // ResNet's stem max-pool
    check_pool(true, 3, 2, 1, false);
    check_pool(true, 2, 2, 0, true);
    check_pool(true, 3, 1, 1, false); // submanifold
}

#[test]
fn avg_pool_matches_dense_masked() {
    check_pool(false, 3, 2, 1, true);
    check_pool(false, 2, 2, 0, true);
    check_pool(false, 3, 1, 1, false);
}

#[test]
fn max_pool_sees_zeros_at_inactive_sites() {
    // One active site with a negative value beside an inactive one: the dense simulation's
    // max is the inactive site's 0, and no gradient reaches the active input.
    let set = Arc::new(ActiveSet::from_mask(&[true, false, true, true], 1, 2, 2).unwrap());
    let x =
        SparseTensor::new(Tensor::from_vec(vec![-1.0f64, -2.0, -3.0], &[3, 1]).unwrap().to_variable(), set).unwrap();
    let mut ctx = SparseContext::generic();
    let y = sparse_max_pool2d(&x, 2, 2, 0, &mut ctx).unwrap();
    assert_eq!(y.features.to_vec_f64().unwrap(), vec![0.0]);
    let g = y.features.sum_all().unwrap().backward().unwrap();
    assert_eq!(g.get(&x.features).unwrap().to_vec_f64().unwrap(), vec![0.0; 3]);
}

#[test]
fn gradcheck_pools() {
    let mut rng = Rng::new(23);
    let m = random_mask(&mut rng, 2, 5, 6, 0.4);
    let set = Arc::new(ActiveSet::from_mask(&m, 2, 5, 6).unwrap());
    let (x, _) = random_sparse(&mut rng, &set, 2, DType::F64);
    for max in [true, false] {
        gradcheck(
            |xs| {
                let st = SparseTensor::new(xs[0].clone(), set.clone())?;
                let mut ctx = SparseContext::generic();
                let y = if max {
                    sparse_max_pool2d(&st, 3, 2, 1, &mut ctx)?
                } else {
                    sparse_avg_pool2d(&st, 3, 2, 1, &mut ctx)?
                };
                Ok(y.features)
            },
            &[x.features.detach()],
            GradCheck::default(),
        )
        .unwrap();
    }
    gradcheck(
        |xs| sparse_global_avg_pool(&SparseTensor::new(xs[0].clone(), set.clone())?),
        &[x.features.detach()],
        GradCheck::default(),
    )
    .unwrap();
}

#[test]
fn global_avg_pool_averages_active_sites_only() {
    let mut rng = Rng::new(24);
    for &ratio in &RATIOS {
        let m = random_mask(&mut rng, 3, 4, 5, ratio);
        let set = Arc::new(ActiveSet::from_mask(&m, 3, 4, 5).unwrap());
        let (x, xv) = random_sparse(&mut rng, &set, 2, DType::F32);
        let y = sparse_global_avg_pool(&x).unwrap();
        assert_eq!(y.dims(), [3, 2]);
        // sum(x * m) / sum(m), and 0 for an image without active sites.
        let counts = set.count_per_image();
        let mut want = vec![0.0; 6];
        for (r, &[b, _, _]) in set.coords().iter().enumerate() {
            for ch in 0..2 {
                want[b * 2 + ch] += xv[r * 2 + ch] / counts[b] as f64;
            }
        }
        assert_rel("global avg", &y.to_vec_f64().unwrap(), &want, 1e-5);
    }
}

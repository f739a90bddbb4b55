//! ActiveSet construction, SparseTensor conversions (gather / scatter / mask-token fill) and their
//! gradients, kernel-map contents and caching.

mod common;

use common::*;
use spark_engine::testing::{gradcheck, GradCheck};
use spark_engine::{DType, Rng, Tensor};
use spark_sparse::{ActiveSet, KernelGeom, KernelMap, SparseContext, SparseTensor};
use std::sync::Arc;

#[test]
fn active_set_order_grid_and_counts() {
    let m = [true, false, true, false, /* image 1 */ false, false, false, true];
    let s = ActiveSet::from_mask(&m, 2, 2, 2).unwrap();
    assert_eq!(s.len(), 3);
    assert_eq!(s.coords(), &[[0, 0, 0], [0, 1, 0], [1, 1, 1]]);
    assert_eq!(s.row_of(0, 1, 0), Some(1));
    assert_eq!(s.row_of(0, 0, 1), None);
    assert_eq!(s.row_of(5, 0, 0), None, "out of range is None, not a panic");
    assert_eq!(s.count_per_image(), vec![2, 1]);
    assert_eq!(s.mask(), m.to_vec());
    assert!(ActiveSet::from_mask(&m, 2, 2, 3).is_err());
}

#[test]
fn patch_mask_upsampling_is_nearest_repeat() {
    // SparK: each patch cell becomes a scale x scale block.
    let patch = [true, false, false, true];
    let s = ActiveSet::from_patch_mask(&patch, 1, 2, 2, 3).unwrap();
    assert_eq!((s.h(), s.w(), s.len()), (6, 6, 18));
    for y in 0..6 {
        for x in 0..6 {
            assert_eq!(s.row_of(0, y, x).is_some(), patch[(y / 3) * 2 + x / 3]);
        }
    }
    let mut ctx = SparseContext::hierarchical(&patch, 1, 2, 2).unwrap();
    let a = ctx.active_set(1, 6, 6).unwrap();
    assert_eq!(a.mask(), s.mask());
    assert!(Arc::ptr_eq(&a, &ctx.active_set(1, 6, 6).unwrap()), "cached per resolution");
    let t = ActiveSet::from_mask_tensor(&a.mask_tensor(DType::F32).unwrap()).unwrap();
    assert_eq!(t.mask(), s.mask());
}

#[test]
fn kernel_map_pairs_neighbours_and_reverse_agree() {
    let mut rng = Rng::new(31);
    let m = random_mask(&mut rng, 2, 7, 6, 0.5);
    let set = Arc::new(ActiveSet::from_mask(&m, 2, 7, 6).unwrap());
    let geom = KernelGeom { kernel: [3, 3], stride: [1, 1], padding: [1, 1], dilation: [1, 1] };
    let map = KernelMap::build(&set, &set, geom).unwrap();
    let k = map.volume();
    let mut total = 0;
    for kk in 0..k {
        for &[i, o] in map.pairs(kk) {
            assert_eq!(map.neighbours()[o as usize * k + kk], i as i32);
            assert_eq!(map.reverse()[i as usize * k + kk], o as i32);
            // The centre offset maps every site to itself.
            if kk == 4 {
                assert_eq!(i, o);
            }
            total += 1;
        }
    }
    assert_eq!(total, map.num_pairs());
    assert_eq!(map.reverse().iter().filter(|&&o| o >= 0).count(), total, "no extra reverse entries");
    // A distinct (equal-content) output set takes the geometric reverse path: same tables.
    let copy = ActiveSet::from_mask(&set.mask(), 2, 7, 6).unwrap();
    let map2 = KernelMap::build(&set, &copy, geom).unwrap();
    assert_eq!(map2.reverse(), map.reverse());
    assert_eq!(map2.neighbours(), map.neighbours());
    assert_eq!(map.pairs(4).len(), set.len());
    let mut ctx = SparseContext::generic();
    let a = ctx.kernel_map(&set, &set, geom).unwrap();
    let b = ctx.kernel_map(&set, &set, geom).unwrap();
    assert!(Arc::ptr_eq(&a, &b), "one map per (set, set, geometry)");
    assert_eq!(ctx.num_kernel_maps(), 1);
}

#[test]
fn from_dense_to_dense_round_trip_and_gradients() {
    let mut rng = Rng::new(32);
    for &ratio in &RATIOS {
        let m = random_mask(&mut rng, 2, 3, 5, ratio);
        let set = Arc::new(ActiveSet::from_mask(&m, 2, 3, 5).unwrap());
        let xv = randn_vec(&mut rng, 2 * 4 * 15);
        let x = tensor(&xv, &[2, 4, 3, 5], DType::F64).to_variable();
        let s = SparseTensor::from_dense(&x, set.clone()).unwrap();
        assert_eq!(s.features.to_vec_f64().unwrap(), rows_of(&xv, &set, 4));
        let d = s.to_dense().unwrap();
        let want: Vec<f64> = densify(&rows_of(&xv, &set, 4), &set, 4);
        assert_eq!(d.to_vec_f64().unwrap(), want, "zeros at inactive sites");
        gradcheck(|xs| SparseTensor::from_dense(&xs[0], set.clone())?.to_dense(), &[x.detach()], GradCheck::default())
            .unwrap();
    }
}

#[test]
fn to_dense_fill_puts_the_token_at_inactive_sites() {
    let mut rng = Rng::new(33);
    let m = random_mask(&mut rng, 2, 4, 3, 0.6);
    let set = Arc::new(ActiveSet::from_mask(&m, 2, 4, 3).unwrap());
    let (x, xv) = random_sparse(&mut rng, &set, 3, DType::F64);
    let token = tensor(&[0.5, -1.0, 2.0], &[1, 3, 1, 1], DType::F64);
    let d = x.to_dense_fill(&token).unwrap().to_vec_f64().unwrap();
    let dense = densify(&xv, &set, 3);
    let mask = set.mask();
    for (i, &v) in d.iter().enumerate() {
        let (b, ch, p) = (i / 36, (i / 12) % 3, i % 12);
        let want = if mask[b * 12 + p] { dense[i] } else { [0.5, -1.0, 2.0][ch] };
        assert_eq!(v, want, "element {i}");
    }
    gradcheck(
        |xs| SparseTensor::new(xs[0].clone(), set.clone())?.to_dense_fill(&xs[1]),
        &[x.features.detach(), token],
        GradCheck::default(),
    )
    .unwrap();
    assert!(x.to_dense_fill(&tensor(&[1.0; 2], &[2], DType::F64)).is_err(), "token of the wrong width");
}

#[test]
fn map_features_and_add_keep_the_set() {
    let mut rng = Rng::new(34);
    let m = random_mask(&mut rng, 1, 4, 4, 0.5);
    let set = Arc::new(ActiveSet::from_mask(&m, 1, 4, 4).unwrap());
    let (x, xv) = random_sparse(&mut rng, &set, 2, DType::F32);
    let r = x.map_features(|f| f.relu()).unwrap();
    let sum = r.add(&x).unwrap();
    let want: Vec<f64> = xv.iter().map(|&v| v.max(0.0) + v).collect();
    assert_rel("relu + residual", &sum.features.to_vec_f64().unwrap(), &want, 1e-6);
    assert!(x.map_features(|f| f.narrow(0, 0, 1)).is_err(), "row count must be kept");
    let other = Arc::new(ActiveSet::from_mask(&[true; 16], 1, 4, 4).unwrap());
    let (y, _) = random_sparse(&mut rng, &other, 2, DType::F32);
    assert!(x.add(&y).is_err(), "different sets");
    assert!(SparseTensor::new(Tensor::zeros(&[3, 2], DType::F32, Default::default()).unwrap(), set).is_err());
}

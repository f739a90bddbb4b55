//! A chain of sparse ops shaped like a ResNet stem and first block, against SparK's dense
//! simulation written with the engine's own dense ops (conv2d, max_pool2d, masks): output and
//! every gradient, f64. Checks that the ops compose (shared context, kernel-map cache, sets
//! handed from layer to layer) and that backward flows through the whole chain.

mod common;

use common::*;
use spark_engine::{Conv2dParams, DType, Rng, Tensor};
use spark_sparse::{sparse_conv2d, sparse_global_avg_pool, sparse_max_pool2d, SparseContext, SparseTensor};

#[test]
fn resnet_like_chain_matches_dense_simulation() {
    let mut rng = Rng::new(41);
    let (batch, fh, fw) = (2, 2, 3);
    // Three of six patches visible per image (every image keeps some).
    let patch = random_mask(&mut rng, batch, fh, fw, 0.5);
    let dt = DType::F64;
    let t = |v: Vec<f64>, s: &[usize]| Tensor::from_vec(v, s).unwrap().to_variable();
    let img = t(randn_vec(&mut rng, batch * 3 * 32 * 48), &[batch, 3, 32, 48]);
    let w_stem = t(randn_vec(&mut rng, 4 * 3 * 49).iter().map(|v| v * 0.2).collect(), &[4, 3, 7, 7]);
    let w_3x3 = t(randn_vec(&mut rng, 4 * 4 * 9).iter().map(|v| v * 0.3).collect(), &[4, 4, 3, 3]);
    let b_3x3 = t(randn_vec(&mut rng, 4), &[4]);
    let w_down = t(randn_vec(&mut rng, 5 * 4), &[5, 4, 1, 1]);

    // Sparse.
    let mut ctx = SparseContext::hierarchical(&patch, batch, fh, fw).unwrap();
    let s0 = ctx.active_set(batch, 32, 48).unwrap();
    let x = SparseTensor::from_dense(&img, s0.clone()).unwrap();
    let y = sparse_conv2d(&x, &w_stem, None, Conv2dParams::new(2, 3), &mut ctx).unwrap();
    let y = y.map_features(|f| f.relu()).unwrap();
    let p = sparse_max_pool2d(&y, 3, 2, 1, &mut ctx).unwrap();
    let z = sparse_conv2d(&p, &w_3x3, Some(&b_3x3), Conv2dParams::new(1, 1), &mut ctx).unwrap();
    let z = z.map_features(|f| f.relu()).unwrap().add(&p).unwrap();
    let d = sparse_conv2d(&z, &w_down, None, Conv2dParams::new(2, 0), &mut ctx).unwrap();
    let out = sparse_global_avg_pool(&d).unwrap();
    assert_eq!((d.active.h(), d.active.w()), (4, 6));

    // Dense simulation: every op on zero-filled input, output multiplied by its scale's mask.
    let mut m = |h: usize, w: usize| ctx.active_set(batch, h, w).unwrap().mask_tensor(dt).unwrap();
    let (m0, m1, m2, m3) = (m(32, 48), m(16, 24), m(8, 12), m(4, 6));
    let xd = img.mul(&m0).unwrap();
    let yd = xd.conv2d(&w_stem, None, Conv2dParams::new(2, 3)).unwrap().mul(&m1).unwrap().relu().unwrap();
    let pd = yd.max_pool2d(3, 2, 1).unwrap().mul(&m2).unwrap();
    let zd = pd.conv2d(&w_3x3, Some(&b_3x3), Conv2dParams::new(1, 1)).unwrap().mul(&m2).unwrap();
    let zd = zd.relu().unwrap().add(&pd).unwrap();
    let dd = zd.conv2d(&w_down, None, Conv2dParams::new(2, 0)).unwrap().mul(&m3).unwrap();
    let count = m3.sum(&[2, 3], false).unwrap(); // [B, 1]
    let outd = dd.sum(&[2, 3], false).unwrap().div(&count).unwrap();

    assert_rel("chain output", &out.to_vec_f64().unwrap(), &outd.to_vec_f64().unwrap(), 1e-10);
    let gw = Tensor::randn(&[batch, 5], 0.0, 1.0, &mut rng, dt, Default::default()).unwrap();
    let gs = out.mul(&gw).unwrap().sum_all().unwrap().backward().unwrap();
    let gd = outd.mul(&gw).unwrap().sum_all().unwrap().backward().unwrap();
    for (name, v) in [("image", &img), ("stem", &w_stem), ("3x3", &w_3x3), ("3x3 bias", &b_3x3), ("down", &w_down)] {
        let a = gs.get(v).unwrap().to_vec_f64().unwrap();
        let b = gd.get(v).unwrap().to_vec_f64().unwrap();
        assert_rel(&format!("chain grad {name}"), &a, &b, 1e-10);
    }
    // stem, max-pool and 3x3 each built one map; the 1x1/s2 downsample one more.
    assert_eq!(ctx.num_kernel_maps(), 4);
}

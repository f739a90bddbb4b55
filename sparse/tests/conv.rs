//! Sparse conv contract: equals SparK's dense simulation (dense conv on the zero-filled input,
//! output multiplied by the output mask) forward and backward, for random masks at every
//! ratio, odd sizes, batch > 1; plus f64 gradient checks and edge cases.

mod common;

use common::*;
use spark_engine::testing::{gradcheck, GradCheck};
use spark_engine::{Conv2dParams, DType, Rng, Tensor};
use spark_sparse::{sparse_conv2d, sparse_conv2d_with, ActiveSet, ConvAlgo, SparseContext, SparseTensor};
use std::sync::Arc;

fn params(g: &Geo) -> Conv2dParams {
    Conv2dParams { stride: g.s, padding: g.p, dilation: g.d, groups: g.groups }
}

fn geo(k: usize, s: usize, p: usize) -> Geo {
    Geo { k: [k, k], s: [s, s], p: [p, p], d: [1, 1], groups: 1 }
}

/// Runs one case and checks output rows and all gradients against the naive dense simulation.
#[allow(clippy::too_many_arguments)]
fn check_case(
    rng: &mut Rng,
    set: &Arc<ActiveSet>,
    ctx: &mut SparseContext,
    cin: usize,
    cout: usize,
    g: Geo,
    dtype: DType,
    algo: ConvAlgo,
    what: &str,
) -> Arc<ActiveSet> {
    let (x, xv) = random_sparse(rng, set, cin, dtype);
    let wv: Vec<f64> = randn_vec(rng, cout * (cin / g.groups) * g.k[0] * g.k[1]);
    let bv = randn_vec(rng, cout);
    let w = tensor(&wv, &[cout, cin / g.groups, g.k[0], g.k[1]], dtype).to_variable();
    let b = tensor(&bv, &[cout], dtype).to_variable();
    let out = sparse_conv2d_with(&x, &w, Some(&b), params(&g), ctx, algo).unwrap();
    let os = out.active.clone();
    let (oh, ow) = out_hw(set.h(), set.w(), &g);
    assert_eq!((os.batch(), os.h(), os.w()), (set.batch(), oh, ow), "{what}: output set shape");
    assert_eq!(out.features.dims(), [os.len(), cout], "{what}: output features shape");

    let dims = [set.batch(), cin, set.h(), set.w()];
    let xd = densify(&xv, set, cin);
    let (yd, _, _) = conv_ref(&xd, dims, &wv, cout, Some(&bv), &g);
    let t = tol(dtype);
    assert_rel(&format!("{what}: forward"), &out.features.to_vec_f64().unwrap(), &rows_of(&yd, &os, cout), t);
    // to_dense is the masked dense output: zeros at inactive output sites.
    let dense_out = out.to_dense().unwrap().to_vec_f64().unwrap();
    let mask = os.mask();
    let masked: Vec<f64> = yd
        .iter()
        .enumerate()
        .map(|(i, &v)| if mask[(i / (cout * oh * ow)) * oh * ow + i % (oh * ow)] { v } else { 0.0 })
        .collect();
    assert_rel(&format!("{what}: to_dense"), &dense_out, &masked, t);

    let gv = randn_vec(rng, os.len() * cout);
    let gt = tensor(&gv, &[os.len(), cout], dtype);
    let grads = out.features.mul(&gt).unwrap().sum_all().unwrap().backward().unwrap();
    let gy = densify(&gv, &os, cout); // = grad_out * output mask
    let (gx, gw, gb) = conv_ref_backward(&xd, dims, &wv, cout, &gy, &g);
    let get = |t: &Tensor| grads.get(t).map(|g| g.to_vec_f64().unwrap()).unwrap_or_else(|| vec![0.0; t.numel()]);
    // The dense simulation's input gradient is also non-zero in a halo of inactive sites; a
    // sparse tensor carries only active rows, which is where we compare.
    assert_rel(&format!("{what}: grad input"), &get(&x.features), &rows_of(&gx, set, cin), t);
    assert_rel(&format!("{what}: grad weight"), &get(&w), &gw, t);
    assert_rel(&format!("{what}: grad bias"), &get(&b), &gb, t);
    os
}

#[test]
fn submanifold_3x3_matches_dense_masked_all_ratios_both_algos() {
    let mut rng = Rng::new(1);
    for &ratio in &RATIOS {
        for dtype in [DType::F32, DType::F64] {
            for algo in [ConvAlgo::PerOffset, ConvAlgo::ImplicitGemm, ConvAlgo::Auto] {
                let m = random_mask(&mut rng, 3, 7, 9, ratio);
                let set = Arc::new(ActiveSet::from_mask(&m, 3, 7, 9).unwrap());
                let mut ctx = SparseContext::generic();
                let os = check_case(&mut rng, &set, &mut ctx, 5, 6, geo(3, 1, 1), dtype, algo, "3x3 s1");
                assert!(Arc::ptr_eq(&os, &set), "submanifold keeps the input sites");
            }
        }
    }
}

#[test]
fn submanifold_other_kernels_match_dense_masked() {
    let mut rng = Rng::new(2);
    let cases = [
        ("1x1", geo(1, 1, 0)),
        ("5x5", geo(5, 1, 2)),
        ("3x3 dilation 2", Geo { k: [3, 3], s: [1, 1], p: [2, 2], d: [2, 2], groups: 1 }),
        ("3x1", Geo { k: [3, 1], s: [1, 1], p: [1, 0], d: [1, 1], groups: 1 }),
        ("3x3 groups 2", Geo { k: [3, 3], s: [1, 1], p: [1, 1], d: [1, 1], groups: 2 }),
    ];
    for (name, g) in cases {
        for &ratio in &[0.25, 0.6] {
            for algo in [ConvAlgo::PerOffset, ConvAlgo::ImplicitGemm] {
                let m = random_mask(&mut rng, 2, 9, 7, ratio);
                let set = Arc::new(ActiveSet::from_mask(&m, 2, 9, 7).unwrap());
                let mut ctx = SparseContext::generic();
                check_case(&mut rng, &set, &mut ctx, 4, 6, g, DType::F32, algo, name);
            }
        }
    }
}

#[test]
fn depthwise_7x7_matches_dense_masked_all_ratios() {
    let mut rng = Rng::new(3);
    for &ratio in &RATIOS {
        for dtype in [DType::F32, DType::F64] {
            let m = random_mask(&mut rng, 2, 9, 11, ratio);
            let set = Arc::new(ActiveSet::from_mask(&m, 2, 9, 11).unwrap());
            let mut ctx = SparseContext::generic();
            let g = Geo { k: [7, 7], s: [1, 1], p: [3, 3], d: [1, 1], groups: 6 };
            check_case(&mut rng, &set, &mut ctx, 6, 6, g, dtype, ConvAlgo::Auto, "dw 7x7");
        }
    }
}

/// SparK's hierarchical masks: patch grid 3x2, the input at 8x the grid, the output at the
/// coarser scale that the stride gives.
#[test]
fn strided_hierarchical_matches_dense_masked() {
    let mut rng = Rng::new(4);
    let (batch, fh, fw) = (3, 3, 2);
    let cases: [(&str, Geo, usize, usize); 5] = [
        ("3x3/s2", geo(3, 2, 1), 8, 5),
        ("1x1/s2 downsample", geo(1, 2, 0), 8, 5),
        ("7x7/s2 stem", geo(7, 2, 3), 8, 3),
        ("4x4/s4 convnext stem", geo(4, 4, 0), 8, 3),
        ("2x2/s2 convnext downsample", geo(2, 2, 0), 4, 4),
    ];
    for (name, g, scale, cin) in cases {
        for &ratio in &RATIOS {
            for algo in [ConvAlgo::PerOffset, ConvAlgo::ImplicitGemm] {
                let patch = random_mask(&mut rng, batch, fh, fw, ratio);
                let mut ctx = SparseContext::hierarchical(&patch, batch, fh, fw).unwrap();
                let set = ctx.active_set(batch, fh * scale, fw * scale).unwrap();
                let os = check_case(&mut rng, &set, &mut ctx, cin, 5, g, DType::F32, algo, name);
                let want = ActiveSet::from_patch_mask(&patch, batch, fh, fw, scale / g.s[0]).unwrap();
                assert_eq!(os.mask(), want.mask(), "{name}: output sites are the coarser patch mask");
            }
        }
    }
}

#[test]
fn strided_generic_dilates_the_active_set() {
    let mut rng = Rng::new(5);
    for &ratio in &RATIOS {
        let m = random_mask(&mut rng, 2, 9, 7, ratio);
        let set = Arc::new(ActiveSet::from_mask(&m, 2, 9, 7).unwrap());
        let mut ctx = SparseContext::generic();
        let os = check_case(&mut rng, &set, &mut ctx, 3, 4, geo(3, 2, 1), DType::F64, ConvAlgo::Auto, "generic s2");
        // Active iff any in-bounds input of the window is active.
        for b in 0..2 {
            for oy in 0..os.h() {
                for ox in 0..os.w() {
                    let mut any = false;
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let (iy, ix) = ((oy * 2 + ky) as isize - 1, (ox * 2 + kx) as isize - 1);
                            if iy >= 0 && ix >= 0 && set.row_of(b, iy as usize, ix as usize).is_some() {
                                any = true;
                            }
                        }
                    }
                    assert_eq!(os.row_of(b, oy, ox).is_some(), any, "site {b},{oy},{ox}");
                }
            }
        }
    }
}

#[test]
fn per_offset_and_implicit_gemm_agree() {
    let mut rng = Rng::new(6);
    let m = random_mask(&mut rng, 2, 11, 13, 0.6);
    let set = Arc::new(ActiveSet::from_mask(&m, 2, 11, 13).unwrap());
    let (x, _) = random_sparse(&mut rng, &set, 16, DType::F64);
    let w = tensor(&randn_vec(&mut rng, 8 * 16 * 9), &[8, 16, 3, 3], DType::F64);
    let mut ctx = SparseContext::generic();
    let a = sparse_conv2d_with(&x, &w, None, Conv2dParams::new(1, 1), &mut ctx, ConvAlgo::PerOffset).unwrap();
    let b = sparse_conv2d_with(&x, &w, None, Conv2dParams::new(1, 1), &mut ctx, ConvAlgo::ImplicitGemm).unwrap();
    assert_rel("algos", &a.features.to_vec_f64().unwrap(), &b.features.to_vec_f64().unwrap(), 1e-12);
    assert_eq!(ctx.num_kernel_maps(), 1, "both convs share one kernel map");
}

fn gradcheck_conv(
    set: Arc<ActiveSet>,
    patch: Option<(Vec<bool>, usize, usize)>,
    g: Geo,
    cin: usize,
    cout: usize,
    algo: ConvAlgo,
) {
    let mut rng = Rng::new(7);
    let x = tensor(&randn_vec(&mut rng, set.len() * cin), &[set.len(), cin], DType::F64);
    let w = tensor(
        &randn_vec(&mut rng, cout * cin / g.groups * g.k[0] * g.k[1]),
        &[cout, cin / g.groups, g.k[0], g.k[1]],
        DType::F64,
    );
    let b = tensor(&randn_vec(&mut rng, cout), &[cout], DType::F64);
    let batch = set.batch();
    gradcheck(
        |xs| {
            let mut ctx = match &patch {
                Some((p, fh, fw)) => SparseContext::hierarchical(p, batch, *fh, *fw)?,
                None => SparseContext::generic(),
            };
            let st = SparseTensor::new(xs[0].clone(), set.clone())?;
            Ok(sparse_conv2d_with(&st, &xs[1], Some(&xs[2]), params(&g), &mut ctx, algo)?.features)
        },
        &[x, w, b],
        GradCheck::default(),
    )
    .unwrap();
}

#[test]
fn gradcheck_submanifold_per_offset_implicit_grouped_depthwise() {
    let mut rng = Rng::new(8);
    let m = random_mask(&mut rng, 2, 5, 4, 0.4);
    let set = Arc::new(ActiveSet::from_mask(&m, 2, 5, 4).unwrap());
    gradcheck_conv(set.clone(), None, geo(3, 1, 1), 3, 2, ConvAlgo::PerOffset);
    gradcheck_conv(set.clone(), None, geo(3, 1, 1), 3, 2, ConvAlgo::ImplicitGemm);
    gradcheck_conv(set.clone(), None, Geo { groups: 2, ..geo(3, 1, 1) }, 4, 2, ConvAlgo::Auto);
    gradcheck_conv(set, None, Geo { groups: 3, ..geo(3, 1, 1) }, 3, 3, ConvAlgo::Auto);
}

#[test]
fn gradcheck_strided() {
    let patch = vec![true, false, false, true, true, true];
    let set = Arc::new(ActiveSet::from_patch_mask(&patch, 2, 1, 3, 4).unwrap());
    for algo in [ConvAlgo::PerOffset, ConvAlgo::ImplicitGemm] {
        gradcheck_conv(set.clone(), Some((patch.clone(), 1, 3)), geo(3, 2, 1), 2, 3, algo);
        gradcheck_conv(set.clone(), Some((patch.clone(), 1, 3)), geo(2, 2, 0), 2, 3, algo);
    }
}

#[test]
fn empty_inputs_give_zeros_or_bias_not_panics() {
    // Image 0 has no active site, image 1 has a few; then a fully empty batch.
    let mut m = vec![false; 2 * 6 * 6];
    m[36 + 7] = true;
    m[36 + 20] = true;
    // A full 2x2 tile in image 1 (the Winograd path with 16 channels).
    let mut tile = vec![false; 2 * 6 * 6];
    for i in [14, 15, 20, 21] {
        tile[36 + i] = true;
    }
    for mask in [m, tile, vec![false; 72]] {
        let set = Arc::new(ActiveSet::from_mask(&mask, 2, 6, 6).unwrap());
        assert_eq!(set.count_per_image()[0], 0);
        let mut ctx = SparseContext::generic();
        for (cin, cout) in [(3, 4), (16, 16)] {
            let x = SparseTensor::new(
                Tensor::zeros(&[set.len(), cin], DType::F32, Default::default()).unwrap().to_variable(),
                set.clone(),
            )
            .unwrap();
            let w = Tensor::ones(&[cout, cin, 3, 3], DType::F32, Default::default()).unwrap().to_variable();
            let b = Tensor::ones(&[cout], DType::F32, Default::default()).unwrap().to_variable();
            for algo in [ConvAlgo::PerOffset, ConvAlgo::ImplicitGemm] {
                let y = sparse_conv2d_with(&x, &w, Some(&b), Conv2dParams::new(1, 1), &mut ctx, algo).unwrap();
                assert_eq!(y.features.dims(), [set.len(), cout]);
                assert!(y.features.to_vec_f64().unwrap().iter().all(|&v| v == 1.0), "zero input: bias only");
                let grads = y.features.sum_all().unwrap().backward().unwrap();
                assert_eq!(grads.get(&w).unwrap().to_vec_f64().unwrap(), vec![0.0; cout * cin * 9]);
                let d = y.to_dense().unwrap().to_vec_f64().unwrap();
                assert!(d[..cout * 36].iter().all(|&v| v == 0.0), "the empty image stays zero");
            }
        }
        let x = SparseTensor::new(
            Tensor::zeros(&[set.len(), 3], DType::F32, Default::default()).unwrap().to_variable(),
            set.clone(),
        )
        .unwrap();
        let dw = Tensor::ones(&[3, 1, 7, 7], DType::F32, Default::default()).unwrap();
        let y = sparse_conv2d(&x, &dw, None, Conv2dParams::new(1, 3).with_groups(3), &mut ctx).unwrap();
        assert_eq!(y.features.dims(), [set.len(), 3]);
    }
}

#[test]
fn hierarchical_context_rejects_a_mask_that_does_not_divide() {
    let patch = vec![true; 2 * 2 * 2];
    let mut ctx = SparseContext::hierarchical(&patch, 2, 2, 2).unwrap();
    let err = ctx.active_set(2, 7, 8).unwrap_err().to_string();
    assert!(err.contains("mask does not divide the feature map"), "{err}");
    // A strided conv whose output resolution is not a multiple of the grid fails the same way.
    let set = ctx.active_set(2, 6, 6).unwrap();
    let x = SparseTensor::new(Tensor::zeros(&[set.len(), 1], DType::F32, Default::default()).unwrap(), set).unwrap();
    let w = Tensor::zeros(&[1, 1, 3, 3], DType::F32, Default::default()).unwrap();
    let err = sparse_conv2d(&x, &w, None, Conv2dParams::new(2, 1), &mut ctx).unwrap_err().to_string();
    assert!(err.contains("mask does not divide the feature map"), "{err}");
    assert!(SparseContext::hierarchical(&patch, 2, 3, 2).is_err(), "wrong patch mask length");
}

#[test]
fn shape_and_dtype_errors_are_reported() {
    let set = Arc::new(ActiveSet::from_mask(&[true; 4], 1, 2, 2).unwrap());
    let x = SparseTensor::new(Tensor::zeros(&[4, 3], DType::F32, Default::default()).unwrap(), set).unwrap();
    let mut ctx = SparseContext::generic();
    let bad_w = Tensor::zeros(&[2, 4, 3, 3], DType::F32, Default::default()).unwrap();
    assert!(sparse_conv2d(&x, &bad_w, None, Conv2dParams::new(1, 1), &mut ctx).is_err());
    let w64 = Tensor::zeros(&[2, 3, 3, 3], DType::F64, Default::default()).unwrap();
    assert!(sparse_conv2d(&x, &w64, None, Conv2dParams::new(1, 1), &mut ctx).is_err());
    let big = Tensor::zeros(&[2, 3, 5, 5], DType::F32, Default::default()).unwrap();
    assert!(sparse_conv2d(&x, &big, None, Conv2dParams::new(1, 0), &mut ctx).is_err(), "kernel larger than input");
}

/// The f32 implicit GEMM packs its operands straight from the feature rows (gather fused into
/// the GEMM's packing). On sets large enough to cross the GEMM's blocking (over 4096 sites,
/// depth over 384, channel counts that are not multiples of the 8-row tile) it must give what
/// the materialised f64 path gives, forward and every gradient.
#[test]
fn fused_f32_implicit_gemm_matches_f64_on_large_sets() {
    let mut rng = Rng::new(21);
    let m = random_mask(&mut rng, 3, 61, 67, 0.4);
    let set = Arc::new(ActiveSet::from_mask(&m, 3, 61, 67).unwrap());
    assert!(set.len() > 4096, "set too small to cross a column block: {}", set.len());
    let cases = [
        ("3x3 48->24", 48, 24, 3, 1, 1, 1),
        ("3x3 32->40 groups 2", 32, 40, 3, 1, 1, 2),
        ("1x1 64->20", 64, 20, 1, 1, 0, 1),
        ("3x3/s2 16->24", 16, 24, 3, 2, 1, 1),
    ];
    for (name, cin, cout, k, s, p, groups) in cases {
        let xv = randn_vec(&mut rng, set.len() * cin);
        let wv = randn_vec(&mut rng, cout * (cin / groups) * k * k);
        let bv = randn_vec(&mut rng, cout);
        let params = Conv2dParams { stride: [s; 2], padding: [p; 2], dilation: [1; 2], groups };
        let run = |dtype: DType| {
            let x = SparseTensor::new(tensor(&xv, &[set.len(), cin], dtype).to_variable(), set.clone()).unwrap();
            let w = tensor(&wv, &[cout, cin / groups, k, k], dtype).to_variable();
            let b = tensor(&bv, &[cout], dtype).to_variable();
            let mut ctx = SparseContext::generic();
            let y = sparse_conv2d_with(&x, &w, Some(&b), params, &mut ctx, ConvAlgo::ImplicitGemm).unwrap();
            let n_out = y.features.dims()[0];
            let gt = tensor(&randn_vec(&mut Rng::new(5), n_out * cout), &[n_out, cout], dtype);
            let grads = y.features.mul(&gt).unwrap().sum_all().unwrap().backward().unwrap();
            let g = |t: &Tensor| grads.get(t).unwrap().to_vec_f64().unwrap();
            [y.features.to_vec_f64().unwrap(), g(&x.features), g(&w), g(&b)]
        };
        let (got, want) = (run(DType::F32), run(DType::F64));
        for (what, (a, b)) in ["forward", "grad input", "grad weight", "grad bias"].iter().zip(got.iter().zip(&want)) {
            assert_rel(&format!("{name}: {what}"), a, b, 1e-4);
        }
    }
}

/// 3x3 submanifold convs with 16+ channels run tile-sparse Winograd F(2x2, 3x3) in f32, forward
/// and input gradient (and weight gradient in the last, largest case). Against the dense masked simulation at every ratio, with per-pixel random
/// masks (tiles partly active) on odd sizes, and with SparK's patch masks (tiles fully active).
#[test]
fn winograd_submanifold_matches_dense_masked() {
    let mut rng = Rng::new(31);
    for ratio in [0.0, 0.25, 0.6, 0.9, 1.0] {
        let m = random_mask(&mut rng, 2, 13, 11, ratio);
        let set = Arc::new(ActiveSet::from_mask(&m, 2, 13, 11).unwrap());
        let mut ctx = SparseContext::generic();
        check_case(
            &mut rng,
            &set,
            &mut ctx,
            16,
            20,
            geo(3, 1, 1),
            DType::F32,
            ConvAlgo::Auto,
            &format!("winograd {ratio}"),
        );
        assert!(
            set.is_empty()
                || ctx
                    .kernel_map(&set, &set, spark_sparse::KernelGeom::conv([3, 3], &Conv2dParams::new(1, 1)))
                    .unwrap()
                    .winograd_tiles()
                    .is_some()
        );
    }
    let patch: Vec<bool> = (0..2 * 49).map(|_| rng.uniform() < 0.4).collect();
    let set = Arc::new(ActiveSet::from_patch_mask(&patch, 2, 7, 7, 4).unwrap());
    let mut ctx = SparseContext::generic();
    check_case(&mut rng, &set, &mut ctx, 24, 16, geo(3, 1, 1), DType::F32, ConvAlgo::Auto, "winograd patch mask");
    // Enough tiles for several blocks per thread.
    let patch: Vec<bool> = (0..3 * 196).map(|_| rng.uniform() < 0.4).collect();
    let set = Arc::new(ActiveSet::from_patch_mask(&patch, 3, 14, 14, 4).unwrap());
    let mut ctx = SparseContext::generic();
    check_case(&mut rng, &set, &mut ctx, 48, 40, geo(3, 1, 1), DType::F32, ConvAlgo::Auto, "winograd large");
    // Enough work for the Winograd weight gradient too (tiles x cin x cout >= 2^24).
    let patch: Vec<bool> = (0..4 * 36).map(|_| rng.uniform() < 0.4).collect();
    let set = Arc::new(ActiveSet::from_patch_mask(&patch, 4, 6, 6, 8).unwrap());
    let mut ctx = SparseContext::generic();
    let geom = spark_sparse::KernelGeom::conv([3, 3], &Conv2dParams::new(1, 1));
    let tiles = ctx.kernel_map(&set, &set, geom).unwrap().winograd_tiles().unwrap().len();
    assert!(tiles * 144 * 128 >= 1 << 24, "{tiles} tiles: too few for the weight-gradient case");
    check_case(&mut rng, &set, &mut ctx, 144, 128, geo(3, 1, 1), DType::F32, ConvAlgo::Auto, "winograd weight grad");
}

/// The tile-sparse Winograd weight gradient against the generic implicit-GEMM one in f64 (a
/// materialised gather, no Winograd), on per-pixel masks with partly active tiles and odd sizes,
/// SparK patch masks, and enough tiles for several blocks per thread.
#[test]
fn winograd_weight_grad_matches_implicit_f64() {
    use spark_sparse::conv_kernels::{implicit_grad_weight, ConvDims};
    use spark_sparse::conv_winograd::{grad_weight, WinogradTiles};
    use spark_sparse::KernelMap;
    let mut rng = Rng::new(41);
    let mut sets = Vec::new();
    for ratio in [0.0, 0.3, 0.6, 0.9] {
        sets.push(ActiveSet::from_mask(&random_mask(&mut rng, 2, 13, 11, ratio), 2, 13, 11).unwrap());
    }
    let patch: Vec<bool> = (0..3 * 196).map(|_| rng.uniform() < 0.4).collect();
    sets.push(ActiveSet::from_patch_mask(&patch, 3, 14, 14, 4).unwrap());
    for (i, set) in sets.into_iter().enumerate() {
        let set = Arc::new(set);
        let (cin, cout) = (16 + 8 * i, 20 + 4 * i);
        let map =
            KernelMap::build(&set, &set, spark_sparse::KernelGeom::conv([3, 3], &Conv2dParams::new(1, 1))).unwrap();
        let tiles = WinogradTiles::build(&set);
        let x = randn_vec(&mut rng, set.len() * cin);
        let dy = randn_vec(&mut rng, set.len() * cout);
        let to32 = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
        let got: Vec<f64> = grad_weight(&to32(&x), &to32(&dy), &tiles, cin, cout).iter().map(|&v| v as f64).collect();
        let want = implicit_grad_weight(&x, &dy, &map, ConvDims { cin, cout, groups: 1, kvol: 9 });
        assert_rel(
            &format!("winograd weight grad, set {i} ({} sites, {} tiles)", set.len(), tiles.len()),
            &got,
            &want,
            1e-4,
        );
    }
}

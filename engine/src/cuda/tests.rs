//! Launch geometry and index arithmetic of the CUDA backend, checked on the CPU (no GPU needed).

use super::conv::{chunk_images, is_direct_depthwise, is_pointwise};
use super::launch::{elementwise, int, per_row};
use super::tensor::strided;
use super::GemmShape;
use crate::cpu::conv::ConvGeom;
use crate::layout::Layout;

#[test]
fn grid_stride_launches_cap_the_grid_and_never_launch_zero_blocks() {
    assert_eq!(elementwise(0).grid_dim.0, 1);
    assert_eq!(elementwise(1).grid_dim.0, 1);
    assert_eq!(elementwise(256).grid_dim.0, 1);
    assert_eq!(elementwise(257).grid_dim.0, 2);
    assert_eq!(elementwise(usize::MAX / 2).grid_dim.0, 65535);
    assert_eq!(per_row(0).grid_dim.0, 1);
    assert_eq!(per_row(70_000).grid_dim.0, 65535);
    assert_eq!(elementwise(10).block_dim.0, 256);
}

#[test]
fn sizes_beyond_the_kernels_32_bit_range_are_errors_that_name_the_op() {
    assert_eq!(int(7, "x").unwrap(), 7);
    let e = int(1 << 31, "conv2d").unwrap_err().to_string();
    assert!(e.contains("conv2d") && e.contains("2147483648"), "{e}");
}

#[test]
fn gemm_extents_cover_every_transpose_and_batch() {
    // A [3 x (5 by 4)] batch with padded leading dimensions: the last element each reads.
    let s = GemmShape {
        lda: 6,
        ldb: 9,
        ldc: 7,
        stride_a: 40,
        stride_b: 50,
        stride_c: 60,
        batch: 3,
        ..GemmShape::plain(5, 8, 4, false, false)
    };
    // A: rows m=5 of k=4 at lda 6 -> 2*40 + 4*6 + 4; B: k=4 rows of n=8 at ldb 9 -> 2*50 + 3*9 + 8.
    assert_eq!(s.extents(), (2 * 40 + 4 * 6 + 4, 2 * 50 + 3 * 9 + 8, 2 * 60 + 4 * 7 + 8));
    let t = GemmShape::plain(5, 8, 4, true, true);
    assert_eq!((t.lda, t.ldb), (5, 4), "stored [k, m] and [n, k]");
    assert_eq!(t.extents(), (4 * 5, 8 * 4, 5 * 8));
    let empty = GemmShape::plain(0, 8, 4, false, false);
    assert_eq!(empty.extents().2, 0);
}

#[test]
fn strided_views_merge_contiguous_runs_and_drop_unit_dims() {
    // A [2, 3, 4] tensor permuted to [3, 2, 4]: dims 2 and 4 do not merge with 3.
    let l = Layout { shape: vec![3, 2, 4], strides: vec![4, 12, 1], offset: 0 };
    let s = strided(&l, "t").unwrap();
    assert_eq!((s.ndim, &s.dims[..3], &s.st[..3]), (3, &[3, 2, 4][..], &[4, 12, 1][..]));
    // A narrowed row block of a contiguous [4, 5, 6]: the inner two dims merge, the offset stays.
    let l = Layout { shape: vec![2, 5, 6], strides: vec![30, 6, 1], offset: 30 };
    let s = strided(&l, "t").unwrap();
    assert_eq!((s.ndim, &s.dims[..1], &s.st[..1], s.off), (1, &[60][..], &[1][..], 30));
    // Unit dims vanish; broadcast (stride 0) dims stay.
    let l = Layout { shape: vec![1, 3, 1, 4], strides: vec![0, 0, 7, 1], offset: 2 };
    let s = strided(&l, "t").unwrap();
    assert_eq!((s.ndim, &s.dims[..2], &s.st[..2]), (2, &[3, 4][..], &[0, 1][..]));
    // More than six dims that cannot merge is an error, not a wrong copy.
    let shape = vec![2; 7];
    let strides: Vec<usize> = (0..7).map(|i| 3usize.pow(i as u32)).collect();
    assert!(strided(&Layout { shape, strides, offset: 0 }, "t").is_err());
}

fn geom(n: usize, cin: usize, hw: usize, cout: usize, k: usize, s: usize, p: usize, groups: usize) -> ConvGeom {
    let o = (hw + 2 * p - k) / s + 1;
    ConvGeom {
        n,
        cin,
        h: hw,
        w: hw,
        cout,
        kh: k,
        kw: k,
        oh: o,
        ow: o,
        stride: [s; 2],
        pad: [p; 2],
        dil: [1; 2],
        groups,
    }
}

#[test]
fn conv_paths_and_image_chunks() {
    assert!(is_pointwise(&geom(2, 64, 56, 256, 1, 1, 0, 1)));
    assert!(!is_pointwise(&geom(2, 64, 56, 256, 1, 2, 0, 1)), "a strided 1x1 needs im2col");
    assert!(is_direct_depthwise(&geom(2, 96, 56, 96, 7, 1, 3, 96)));
    assert!(!is_direct_depthwise(&geom(2, 96, 56, 192, 7, 1, 3, 96)), "a channel multiplier is grouped");
    let mut dil = geom(2, 8, 16, 8, 3, 1, 2, 8);
    dil.dil = [2, 2];
    assert!(!is_direct_depthwise(&dil));
    // ResNet-50's stem at batch 128: 147 x 12544 floats (7.4 MB) per image, so 72 images a
    // chunk stay under 512 MB and two chunks cover the batch; never zero, never past the batch.
    let stem = geom(128, 3, 224, 64, 7, 2, 3, 1);
    let c = chunk_images(&stem);
    assert_eq!(c, 72);
    assert!(c * stem.cin * 49 * stem.l() * 4 <= 512 << 20);
    assert_eq!(chunk_images(&geom(1, 3, 8, 4, 3, 1, 1, 1)), 1);
    assert_eq!(chunk_images(&geom(2, 4096, 512, 4, 7, 1, 3, 1)), 1, "one image over budget still runs");
}

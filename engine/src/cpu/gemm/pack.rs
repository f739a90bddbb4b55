//! Packing of A blocks into MR-row panels and B blocks into NR-column panels, zero-padded to
//! whole panels so the microkernel never branches on edges. Packing also absorbs any strides
//! (transposed operands are just another stride pair).

use super::{MatRef, PackA, PackB};
use crate::cpu::transpose::transpose;

/// Packs rows `i0..i0+mc`, depths `p0..p0+kc` of `a` into `dst` as ceil(mc/MR) panels of
/// `kc * MR` values (for each k, MR row values).
fn pack_a(a: &MatRef<'_, f32>, i0: usize, mc: usize, p0: usize, kc: usize, mr: usize, dst: &mut [f32]) {
    let panels = mc.div_ceil(mr);
    for pi in 0..panels {
        let r0 = i0 + pi * mr;
        let rows = mr.min(i0 + mc - r0);
        let panel = &mut dst[pi * kc * mr..(pi + 1) * kc * mr];
        if a.rs == 1 && rows == mr {
            // Column-major A (a transposed operand): each k step is contiguous.
            for p in 0..kc {
                let src = &a.data[r0 + (p0 + p) * a.cs..][..mr];
                panel[p * mr..p * mr + mr].copy_from_slice(src);
            }
        } else {
            if a.cs == 1 {
                // Row-major A: the panel is the transpose of a rows x kc block.
                transpose(&a.data[r0 * a.rs + p0..], a.rs, rows, kc, panel, mr);
            } else {
                for i in 0..rows {
                    let base = (r0 + i) * a.rs + p0 * a.cs;
                    for p in 0..kc {
                        panel[p * mr + i] = a.data[base + p * a.cs];
                    }
                }
            }
            for i in rows..mr {
                for p in 0..kc {
                    panel[p * mr + i] = 0.0;
                }
            }
        }
    }
}

/// Packs one NR-wide panel of B: columns `j0..j0+cols` (cols <= NR), depths `p0..p0+kc`.
pub(crate) fn pack_b_panel(
    b: &MatRef<'_, f32>,
    j0: usize,
    cols: usize,
    p0: usize,
    kc: usize,
    nr: usize,
    dst: &mut [f32],
) {
    if b.cs == 1 && cols == nr {
        for p in 0..kc {
            let src = &b.data[(p0 + p) * b.rs + j0..][..nr];
            dst[p * nr..p * nr + nr].copy_from_slice(src);
        }
    } else if b.rs == 1 {
        // Transposed B (column-major): the panel is the transpose of a cols x kc block.
        transpose(&b.data[j0 * b.cs + p0..], b.cs, cols, kc, dst, nr);
        for p in 0..kc {
            dst[p * nr + cols..p * nr + nr].iter_mut().for_each(|v| *v = 0.0);
        }
    } else {
        for p in 0..kc {
            let row = &mut dst[p * nr..p * nr + nr];
            let base = (p0 + p) * b.rs;
            for (j, v) in row.iter_mut().enumerate() {
                *v = if j < cols { b.data[base + (j0 + j) * b.cs] } else { 0.0 };
            }
        }
    }
}

impl PackA for MatRef<'_, f32> {
    fn pack_a(&self, i0: usize, mc: usize, p0: usize, kc: usize, mr: usize, dst: &mut [f32]) {
        pack_a(self, i0, mc, p0, kc, mr, dst)
    }
}

impl PackB for MatRef<'_, f32> {
    fn pack_b(&self, j0: usize, cols: usize, p0: usize, kc: usize, nr: usize, dst: &mut [f32]) {
        pack_b_panel(self, j0, cols, p0, kc, nr, dst)
    }
}

//! The BLIS loop nest for f32: NC-wide column blocks of B, KC-deep slices, packed B shared by
//! all threads, then (MC-row block of A) x (range of NR panels) tasks run in parallel, each with
//! its own packed A block. Inside a task: NR panel of B outer (stays in L1), MR panel of A inner.

use super::kernels::KernelSpec;
use super::{PackA, PackB};
use crate::cpu::SyncPtr;
use rayon::prelude::*;
use std::cell::RefCell;

/// Below this many multiply-adds a single thread is faster than splitting.
const PAR_MIN_WORK: usize = 1 << 21;

thread_local! {
    static A_BUF: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static B_BUF: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on a 64-byte aligned scratch slice of `len` floats, reusing a per-thread buffer when
/// it is free (a work-stealing thread can re-enter while an outer call still holds it).
fn with_scratch<R>(
    key: &'static std::thread::LocalKey<RefCell<Vec<f32>>>,
    len: usize,
    f: impl FnOnce(&mut [f32]) -> R,
) -> R {
    fn aligned(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
        if v.len() < len + 16 {
            v.resize(len + 16, 0.0);
        }
        let off = v.as_ptr().align_offset(64).min(15);
        &mut v[off..off + len]
    }
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) => f(aligned(&mut v, len)),
        Err(_) => {
            let mut v = Vec::new();
            f(aligned(&mut v, len))
        }
    })
}

/// `C[m, n] (+)= A[m, k] · B[k, n]` where A and B are whatever can pack themselves into panels.
pub(crate) fn gemm_f32<A: PackA + ?Sized, B: PackB + ?Sized>(
    spec: &KernelSpec,
    (m, n, k): (usize, usize, usize),
    a: &A,
    b: &B,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    let (mr, nr) = (spec.mr, spec.nr);
    let threads = rayon::current_num_threads();
    let parallel = threads > 1 && m * n * k >= PAR_MIN_WORK;
    let cptr = SyncPtr(c.as_mut_ptr());
    let nc_blk = spec.nc.div_ceil(nr) * nr;

    // Split M into a multiple of the thread count so blocks balance.
    let mut mblocks = m.div_ceil(spec.mc);
    if parallel {
        mblocks = mblocks.div_ceil(threads) * threads;
    }
    let mc_eff = m.div_ceil(mblocks).div_ceil(mr) * mr;
    let mblocks = m.div_ceil(mc_eff);

    for jc in (0..n).step_by(nc_blk) {
        let ncur = nc_blk.min(n - jc);
        let npanels = ncur.div_ceil(nr);
        // Few row blocks (small M): also split the NR panels across threads.
        let nsplit = if parallel && mblocks < threads { threads.div_ceil(mblocks).min(npanels) } else { 1 };
        let per_split = npanels.div_ceil(nsplit);
        for pc in (0..k).step_by(spec.kc) {
            let kcur = spec.kc.min(k - pc);
            let beta = accumulate || pc > 0;
            let bp_len = kcur * nr;
            with_scratch(&B_BUF, npanels * bp_len, |bbuf| {
                let pack = |(jp, dst): (usize, &mut [f32])| {
                    let j0 = jc + jp * nr;
                    b.pack_b(j0, nr.min(jc + ncur - j0), pc, kcur, nr, dst)
                };
                if parallel {
                    bbuf.par_chunks_mut(bp_len).enumerate().for_each(pack);
                } else {
                    bbuf.chunks_mut(bp_len).enumerate().for_each(pack);
                }
                let bbuf = &*bbuf;
                let task = |t: usize| {
                    let (ib, js) = (t / nsplit, t % nsplit);
                    let i0 = ib * mc_eff;
                    let mcur = mc_eff.min(m - i0);
                    let (p_lo, p_hi) = (js * per_split, ((js + 1) * per_split).min(npanels));
                    if p_lo >= p_hi {
                        return;
                    }
                    let apanels = mcur.div_ceil(mr);
                    with_scratch(&A_BUF, apanels * kcur * mr, |abuf| {
                        a.pack_a(i0, mcur, pc, kcur, mr, abuf);
                        let mut tmp = [0.0f32; 32 * 32];
                        for jp in p_lo..p_hi {
                            let j0 = jc + jp * nr;
                            let cols = nr.min(n - j0);
                            let bpan = bbuf[jp * bp_len..].as_ptr();
                            for ip in 0..apanels {
                                let r0 = i0 + ip * mr;
                                let rows = mr.min(m - r0);
                                let apan = abuf[ip * kcur * mr..].as_ptr();
                                // SAFETY: the packed panels hold kcur*mr / kcur*nr floats; the C
                                // tile (r0.., j0..) lies inside C (checked by `gemm`) and belongs
                                // to this task only.
                                unsafe {
                                    let ct = cptr.get().add(r0 * ldc + j0);
                                    if rows == mr && cols == nr {
                                        (spec.func)(kcur, apan, bpan, ct, ldc, beta);
                                    } else {
                                        (spec.func)(kcur, apan, bpan, tmp.as_mut_ptr(), nr, false);
                                        for i in 0..rows {
                                            let crow = std::slice::from_raw_parts_mut(ct.add(i * ldc), cols);
                                            let trow = &tmp[i * nr..i * nr + cols];
                                            if beta {
                                                crow.iter_mut().zip(trow).for_each(|(c, t)| *c += t);
                                            } else {
                                                crow.copy_from_slice(trow);
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    })
                };
                let ntasks = mblocks * nsplit;
                if parallel {
                    (0..ntasks).into_par_iter().for_each(task);
                } else {
                    (0..ntasks).for_each(task);
                }
            });
        }
    }
}

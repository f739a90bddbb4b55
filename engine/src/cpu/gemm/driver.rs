//! The BLIS loop nest for f32: NC-wide column blocks of B, KC-deep slices, packed B shared by
//! all threads, then (MC-row block of A) x (range of NR panels) tasks run in parallel, each with
//! its own packed A block. Inside a task: NR panel of B outer (stays in L1), MR panel of A inner.
//!
//! The packed form depends on the matmul precision (`crate::precision`): f32 panels (rounded to
//! bf16 at bf16 precision on CPUs without AVX512-BF16), or bf16 pair words for the `vdpbf16ps`
//! kernel.

use super::bf16;
use super::kernels::KernelSpec;
use super::{PackA, PackB};
use crate::cpu::SyncPtr;
use crate::precision::MatmulPrecision;
use rayon::prelude::*;
use std::cell::RefCell;
use std::thread::LocalKey;

/// Below this many multiply-adds a single thread is faster than splitting.
const PAR_MIN_WORK: usize = 1 << 21;

thread_local! {
    static A_BUF: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static B_BUF: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static A_PAIRS: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    static B_PAIRS: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    static PANEL_F32: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on a 64-byte aligned scratch slice of `len` elements, reusing a per-thread buffer
/// when it is free (a work-stealing thread can re-enter while an outer call still holds it).
fn with_scratch<T: Copy + Default, R>(
    key: &'static LocalKey<RefCell<Vec<T>>>,
    len: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    fn aligned<T: Copy + Default>(v: &mut Vec<T>, len: usize) -> &mut [T] {
        if v.len() < len + 16 {
            v.resize(len + 16, T::default());
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

/// One packed form: its element, how many elements a depth slice of `kc` takes per row/column,
/// how A blocks and B panels are packed into it, and the microkernel that reads it.
trait Packing: Sync {
    type Elem: Copy + Default + Send + Sync + 'static;
    fn a_buf() -> &'static LocalKey<RefCell<Vec<Self::Elem>>>;
    fn b_buf() -> &'static LocalKey<RefCell<Vec<Self::Elem>>>;
    fn depth(kc: usize) -> usize;
    #[allow(clippy::too_many_arguments)]
    fn pack_a<A: PackA + ?Sized>(
        &self,
        a: &A,
        i0: usize,
        mc: usize,
        p0: usize,
        kc: usize,
        mr: usize,
        dst: &mut [Self::Elem],
    );
    #[allow(clippy::too_many_arguments)]
    fn pack_b<B: PackB + ?Sized>(
        &self,
        b: &B,
        j0: usize,
        cols: usize,
        p0: usize,
        kc: usize,
        nr: usize,
        dst: &mut [Self::Elem],
    );
    /// # Safety
    /// As the microkernels: full panels of `depth` steps and an MR x NR tile of C.
    unsafe fn kernel(
        &self,
        depth: usize,
        a: *const Self::Elem,
        b: *const Self::Elem,
        c: *mut f32,
        ldc: usize,
        acc: bool,
    );
}

/// f32 panels for the f32 kernel, rounded to bf16 first when `round` (bf16 precision on a CPU
/// without AVX512-BF16: same numbers as the native kernel, f32 speed).
struct F32Panels {
    func: super::kernels::KernelFn,
    round: bool,
}

impl Packing for F32Panels {
    type Elem = f32;
    fn a_buf() -> &'static LocalKey<RefCell<Vec<f32>>> {
        &A_BUF
    }
    fn b_buf() -> &'static LocalKey<RefCell<Vec<f32>>> {
        &B_BUF
    }
    fn depth(kc: usize) -> usize {
        kc
    }
    fn pack_a<A: PackA + ?Sized>(&self, a: &A, i0: usize, mc: usize, p0: usize, kc: usize, mr: usize, dst: &mut [f32]) {
        a.pack_a(i0, mc, p0, kc, mr, dst);
        if self.round {
            bf16::round_in_place(&mut dst[..mc.div_ceil(mr) * kc * mr]);
        }
    }
    fn pack_b<B: PackB + ?Sized>(
        &self,
        b: &B,
        j0: usize,
        cols: usize,
        p0: usize,
        kc: usize,
        nr: usize,
        dst: &mut [f32],
    ) {
        b.pack_b(j0, cols, p0, kc, nr, dst);
        if self.round {
            bf16::round_in_place(&mut dst[..kc * nr]);
        }
    }
    unsafe fn kernel(&self, depth: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, acc: bool) {
        (self.func)(depth, a, b, c, ldc, acc)
    }
}

/// bf16 pair words for the `vdpbf16ps` kernel.
struct PairPanels(super::kernels::Bf16KernelFn);

impl Packing for PairPanels {
    type Elem = u32;
    fn a_buf() -> &'static LocalKey<RefCell<Vec<u32>>> {
        &A_PAIRS
    }
    fn b_buf() -> &'static LocalKey<RefCell<Vec<u32>>> {
        &B_PAIRS
    }
    fn depth(kc: usize) -> usize {
        kc.div_ceil(2)
    }
    fn pack_a<A: PackA + ?Sized>(&self, a: &A, i0: usize, mc: usize, p0: usize, kc: usize, mr: usize, dst: &mut [u32]) {
        let panels = mc.div_ceil(mr);
        with_scratch(&PANEL_F32, panels * kc * mr, |tmp| {
            a.pack_a(i0, mc, p0, kc, mr, tmp);
            for (src, out) in tmp.chunks_exact(kc * mr).zip(dst.chunks_exact_mut(Self::depth(kc) * mr)) {
                bf16::to_pairs(src, mr, kc, out);
            }
        })
    }
    fn pack_b<B: PackB + ?Sized>(
        &self,
        b: &B,
        j0: usize,
        cols: usize,
        p0: usize,
        kc: usize,
        nr: usize,
        dst: &mut [u32],
    ) {
        with_scratch(&PANEL_F32, kc * nr, |tmp| {
            b.pack_b(j0, cols, p0, kc, nr, tmp);
            bf16::to_pairs(tmp, nr, kc, dst);
        })
    }
    unsafe fn kernel(&self, depth: usize, a: *const u32, b: *const u32, c: *mut f32, ldc: usize, acc: bool) {
        (self.0)(depth, a, b, c, ldc, acc)
    }
}

/// `C[m, n] (+)= A[m, k] · B[k, n]` where A and B are whatever can pack themselves into panels.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_f32<A: PackA + ?Sized, B: PackB + ?Sized>(
    spec: &KernelSpec,
    precision: MatmulPrecision,
    dims: (usize, usize, usize),
    a: &A,
    b: &B,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    let (m, n, _) = dims;
    // The unsafe tile writes in `run` rely on C holding every (row < m, col < n) at ldc.
    assert!(m == 0 || n == 0 || (ldc >= n && c.len() >= (m - 1) * ldc + n), "gemm: C too small");
    match (precision, spec.bf16_func) {
        (MatmulPrecision::Bf16, Some(f)) => run(&PairPanels(f), spec, dims, a, b, c, ldc, accumulate),
        (p, _) => {
            let packing = F32Panels { func: spec.func, round: p == MatmulPrecision::Bf16 };
            run(&packing, spec, dims, a, b, c, ldc, accumulate)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn run<P: Packing, A: PackA + ?Sized, B: PackB + ?Sized>(
    packing: &P,
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
            let depth = P::depth(kcur);
            let beta = accumulate || pc > 0;
            let bp_len = depth * nr;
            with_scratch(P::b_buf(), npanels * bp_len, |bbuf| {
                let pack = |(jp, dst): (usize, &mut [P::Elem])| {
                    let j0 = jc + jp * nr;
                    packing.pack_b(b, j0, nr.min(jc + ncur - j0), pc, kcur, nr, dst)
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
                    with_scratch(P::a_buf(), apanels * depth * mr, |abuf| {
                        packing.pack_a(a, i0, mcur, pc, kcur, mr, abuf);
                        let mut tmp = [0.0f32; 32 * 32];
                        for jp in p_lo..p_hi {
                            let j0 = jc + jp * nr;
                            let cols = nr.min(n - j0);
                            let bpan = bbuf[jp * bp_len..].as_ptr();
                            for ip in 0..apanels {
                                let r0 = i0 + ip * mr;
                                let rows = mr.min(m - r0);
                                let apan = abuf[ip * depth * mr..].as_ptr();
                                // SAFETY: the packed panels hold depth*mr / depth*nr elements; the
                                // C tile (r0.., j0..) lies inside C (checked in `gemm_f32`) and
                                // belongs to this task only.
                                unsafe {
                                    let ct = cptr.get().add(r0 * ldc + j0);
                                    if rows == mr && cols == nr {
                                        packing.kernel(depth, apan, bpan, ct, ldc, beta);
                                    } else {
                                        packing.kernel(depth, apan, bpan, tmp.as_mut_ptr(), nr, false);
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

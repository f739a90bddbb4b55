// gemm_bf16.cu — batched bf16 x bf16 -> f32 GEMM on tensor cores (mma.sync m16n8k16, inline PTX),
// plus f32 <-> bf16 cast kernels. Requires sm_80+ (cp.async, ldmatrix, bf16 mma).
//
// Self-contained for NVRTC (no #include). bf16 values are raw `unsigned short` bit patterns (the
// upper 16 bits of an f32).
//
// GEMM entry points (unmangled, extern "C"): gemm_bf16_nn, gemm_bf16_nt, gemm_bf16_tn, gemm_bf16_tt
//   (int M, int N, int K, float alpha,
//    const unsigned short* A, int lda, long long strideA,
//    const unsigned short* B, int ldb, long long strideB,
//    float beta, float* C, int ldc, long long strideC)
// For batch b = blockIdx.z (A_b = A + b*strideA, likewise B, C), all row-major:
//   C_b[m*ldc + n] = alpha * sum_k A_b(m,k) * B_b(k,n) + beta * C_b[m*ldc + n]   (f32 accumulate)
//   A(m,k) = A[m*lda + k] (first letter n) or A[k*lda + m] (first letter t)
//   B(k,n) = B[k*ldb + n] (second letter n) or B[n*ldb + k] (second letter t)
// When beta == 0, C is never read. K == 0 gives C = beta*C (0 if beta == 0). Any M, N >= 1, K >= 0,
// any leading dimension, 2-byte aligned A/B, 4-byte aligned C.
//
// Launch geometry (fixed): blockDim = (256,1,1) = 8 warps, gridDim = (ceil(N/256), ceil(M/128), batch),
// dynamic shared memory GB_SMEM_BYTES = 4 stages x (A 128x32 + B 32x256) bf16 = 4 x 24 KiB = 98,304
// bytes (the host sets CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES; see engine/src/cuda/gemm.rs).
//
// Design: block tile 128(m) x 256(n), K-step 32, 4-stage cp.async shared-memory pipeline, one
// __syncthreads per K tile. Warp w computes the 64x64 sub-tile rows (w>>2)*64.., cols (w&3)*64.. as
// 4 (m16) x 8 (n8) mma tiles, 128 f32 accumulators per thread; the fragments of the next k16 slice
// (also across the K-tile boundary) are loaded from shared memory while the mma of the current
// slice issue (two register fragment buffers). The block index is remapped (groups of GB_GROUP
// row tiles, column-major inside a group) for L2 reuse.
// Each operand tile keeps the memory order of its source so that 16-byte chunks copy straight
// from global memory (MNT = 128 for A, 256 for B):
//   k-contiguous operand (A 'n', B 't'): tile [MNT mn][32 k], 64-byte rows, 4 chunks of 8 k;
//       chunk c of row r lives at r*64 + ((c ^ ((r>>1)&3)) * 16)          -> ldmatrix (no .trans)
//   mn-contiguous operand (A 't', B 'n'): tile [32 k][MNT mn], 2*MNT-byte rows, MNT/8 chunks of 8 mn;
//       chunk c of row r lives at r*2*MNT + ((c ^ (r&7)) * 16)             -> ldmatrix .trans
// (XOR swizzles make every ldmatrix phase conflict-free.) A tile is 512 chunks (2 per thread),
// a B tile 1024 (4 per thread).
// Aligned path (per operand, block-uniform run-time check: ld % 8 == 0 and the batch pointer
// 16-byte aligned): cp.async.cg 16-byte copies, with src-size < 16 zero-filling a partial chunk at
// the matrix edge / K tail and src-size 0 zero-filling chunks fully outside. Otherwise: guarded
// 2-byte loads, zero outside the matrix, one 16-byte shared store per chunk. Every element of a
// stage is rewritten for every K tile, so padding is always exact zeros.

#define GB_BM 128
#define GB_BN 256
#define GB_BK 32
#define GB_STAGES 4
#define GB_GROUP 16                                // row tiles per rasterisation group
#define GB_A_BYTES (GB_BM * GB_BK * 2)              // 8192: A tile
#define GB_B_BYTES (GB_BN * GB_BK * 2)              // 16384: B tile
#define GB_STAGE_BYTES (GB_A_BYTES + GB_B_BYTES)    // 24576: A tile then B tile
#define GB_SMEM_BYTES (GB_STAGES * GB_STAGE_BYTES)  // 98304

#ifndef GEMM_HOST_EMULATION
__device__ __forceinline__ unsigned gb_smem_addr(const void* p) {
    return (unsigned)__cvta_generic_to_shared(p);
}
__device__ __forceinline__ unsigned short gb_ld(const unsigned short* p) { return __ldg(p); }
__device__ __forceinline__ float gb_ldc(const float* p) { return *p; }

// 16-byte async copy global -> shared; bytes [src_bytes, 16) of the destination are zero-filled.
__device__ __forceinline__ void gb_cp_async16(unsigned dst, const void* src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n"
                 :: "r"(dst), "l"(src), "r"(src_bytes) : "memory");
}
// Same with all 16 bytes copied.
__device__ __forceinline__ void gb_cp_async16_full(unsigned dst, const void* src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" :: "r"(dst), "l"(src) : "memory");
}
__device__ __forceinline__ void gb_cp_async_commit() {
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void gb_cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" :: "n"(N) : "memory");
}
__device__ __forceinline__ void gb_ldmatrix_x4(unsigned (&r)[4], unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr) : "memory");
}
__device__ __forceinline__ void gb_ldmatrix_x4_trans(unsigned (&r)[4], unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr) : "memory");
}
// d = A(16x16, row) * B(16x8, col) + d, bf16 inputs, f32 accumulate.
__device__ __forceinline__ void gb_mma16816(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#else
static inline void gb_cp_async16_full(unsigned dst, const void* src) { gb_cp_async16(dst, src, 16); }
#endif

// Byte offset of 16-byte chunk c of row r inside one operand tile of MNT mn (see the layout above).
template <bool KC, int MNT>
__device__ __forceinline__ unsigned gb_chunk_off(int r, int c) {
    return KC ? (unsigned)(r * 64 + ((c ^ ((r >> 1) & 3)) << 4))
              : (unsigned)(r * (MNT * 2) + ((c ^ (r & 7)) << 4));
}

// Loads K tile `kt` of one operand into the tile at shared address `dst` (generic pointer dstp).
// The operand is viewed as P(mn, k), mn in [0, mnExt) relative to the block, k in [0, K):
//   KC:  P(mn, k) = P[mn*ld + k]       !KC: P(mn, k) = P[k*ld + mn]
// `P` already points at the block's first mn; `base` is the batch's element (0,0) (always valid).
template <bool KC, int MNT>
__device__ __forceinline__ void gb_load_tile(const unsigned short* P, const unsigned short* base, int ld,
                                             int mnExt, int K, int kt, bool vec, unsigned dst,
                                             unsigned char* dstp, int tid) {
    constexpr int NCH = MNT * GB_BK / 8 / 256;     // chunks per thread
    constexpr int CPR = MNT / 8;                   // chunks per row (mn-contiguous tile)
#pragma unroll
    for (int i = 0; i < NCH; ++i) {
        const int q = tid + i * 256;
        int r, c, mn, k;
        if (KC) { r = q >> 2;   c = q & 3;         mn = r;     k = kt * GB_BK + c * 8; }  // 8 along k
        else    { r = q / CPR;  c = q % CPR;       mn = c * 8; k = kt * GB_BK + r;     }  // 8 along mn
        const unsigned off = gb_chunk_off<KC, MNT>(r, c);
        // Number of valid elements of this 8-element chunk (0..8).
        int nvalid;
        if (KC) nvalid = (mn < mnExt) ? min(max(K - k, 0), 8) : 0;
        else    nvalid = (k < K) ? min(max(mnExt - mn, 0), 8) : 0;
        const unsigned short* src = KC ? P + (long long)mn * ld + k : P + (long long)k * ld + mn;
        if (vec) {
            gb_cp_async16(dst + off, nvalid > 0 ? (const void*)src : (const void*)base, nvalid * 2);
        } else {
            unsigned w[4];
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const unsigned lo = (2 * e < nvalid) ? (unsigned)gb_ld(src + 2 * e) : 0u;
                const unsigned hi = (2 * e + 1 < nvalid) ? (unsigned)gb_ld(src + 2 * e + 1) : 0u;
                w[e] = lo | (hi << 16);
            }
            *reinterpret_cast<uint4*>(dstp + off) = make_uint4(w[0], w[1], w[2], w[3]);
        }
    }
}

// Aligned-path (vec) loader state of one operand for this thread, fixed for the whole K loop.
// Thread tid owns NCH chunks i = 0..NCH-1 of every tile (same chunk numbering as gb_load_tile):
//   KC:  row r_i = (tid>>2) + 64*i (mn), chunk c = tid&3 (k = kt*32 + c*8 .. +8);
//   !KC: row r_i = tid/CPR + i*(256/CPR) (k = kt*32 + r_i), chunk c = tid%CPR (mn = c*8 .. +8).
// Their shared offsets are off + i*64*64 (KC) / off + i*(256/CPR)*2*MNT (!KC): the swizzle term
// of gb_chunk_off only depends on r mod 8, which these row steps keep.
struct GbVec {
    const unsigned short* g;   // source of chunk 0 for kt = 0
    unsigned off;              // shared byte offset of chunk 0 inside the operand tile
    int lim;                   // KC: K - c*8 (valid k of chunk = lim - kt*32, clamped to 0..8)
                               // !KC: K - r_0 (chunk i in range iff i*(256/CPR) < lim - kt*32)
    int aux;                   // KC: bit i set iff row r_i < mnExt; !KC: valid bytes along mn (0..16)
};

template <bool KC, int MNT>
__device__ __forceinline__ GbVec gb_vec_init(const unsigned short* P, int ld, int mnExt, int K, int tid) {
    constexpr int NCH = MNT * GB_BK / 8 / 256;
    constexpr int CPR = MNT / 8;
    GbVec v;
    if (KC) {
        const int r = tid >> 2, c = tid & 3;
        v.g = P + (long long)r * ld + c * 8;
        v.off = gb_chunk_off<true, MNT>(r, c);
        v.lim = K - c * 8;
        int mask = 0;
#pragma unroll
        for (int i = 0; i < NCH; ++i) mask |= (r + 64 * i < mnExt) ? (1 << i) : 0;
        v.aux = mask;
    } else {
        const int r = tid / CPR, c = tid % CPR;
        v.g = P + (long long)r * ld + c * 8;
        v.off = gb_chunk_off<false, MNT>(r, c);
        v.lim = K - r;
        v.aux = min(max(mnExt - c * 8, 0), 8) * 2;
    }
    return v;
}

// Same result as gb_load_tile(..., vec = true, ...) for K tile kt. `full` (block-uniform) promises
// that every chunk is entirely inside the matrix: mnExt >= MNT and (kt+1)*GB_BK <= K.
template <bool KC, int MNT>
__device__ __forceinline__ void gb_load_tile_vec(const GbVec& v, const unsigned short* base, int ld, int kt,
                                                 bool full, unsigned dst) {
    constexpr int NCH = MNT * GB_BK / 8 / 256;
    constexpr int CPR = MNT / 8;
    constexpr int ROWS = 256 / CPR;                // !KC: k rows per pass of 256 chunks
    if (full) {
        const unsigned short* g = KC ? v.g + kt * GB_BK : v.g + (long long)(kt * GB_BK) * ld;
#pragma unroll
        for (int i = 0; i < NCH; ++i) {
            if (KC) gb_cp_async16_full(dst + v.off + i * 64 * 64, g + (long long)(64 * i) * ld);
            else    gb_cp_async16_full(dst + v.off + i * ROWS * (MNT * 2), g + (long long)(ROWS * i) * ld);
        }
    } else if (KC) {
        const unsigned short* g = v.g + kt * GB_BK;
        const int kb = min(max(v.lim - kt * GB_BK, 0), 8) * 2;
#pragma unroll
        for (int i = 0; i < NCH; ++i) {
            const int bytes = ((v.aux >> i) & 1) ? kb : 0;
            const unsigned short* src = g + (long long)(64 * i) * ld;
            gb_cp_async16(dst + v.off + i * 64 * 64, bytes > 0 ? (const void*)src : (const void*)base, bytes);
        }
    } else {
        const unsigned short* g = v.g + (long long)(kt * GB_BK) * ld;
        const int kl = v.lim - kt * GB_BK;
#pragma unroll
        for (int i = 0; i < NCH; ++i) {
            const int bytes = (i * ROWS < kl) ? v.aux : 0;
            const unsigned short* src = g + (long long)(ROWS * i) * ld;
            gb_cp_async16(dst + v.off + i * ROWS * (MNT * 2), bytes > 0 ? (const void*)src : (const void*)base,
                          bytes);
        }
    }
}

// Fragments of one k16 slice of the warp's 64x64 tile: A for 4 m16 tiles, B for 8 n8 tiles.
struct GbFrag {
    unsigned a[4][4];
    unsigned b[8][2];
};

// Loads slice ks (0/1) of the stage whose A tile starts at shared address sa (B tile at sa+GB_A_BYTES).
// Per-lane offsets (see gemm_bf16_body): KC operand: abase[ks] + i*16*64, !KC: abase[i] + ks*16*rowbytes.
template <bool AKC, bool BKC>
__device__ __forceinline__ void gb_load_frag(GbFrag& f, unsigned sa, int ks, const unsigned (&abase)[4],
                                             const unsigned (&bbase)[4]) {
    const unsigned sb = sa + GB_A_BYTES;
#pragma unroll
    for (int mi = 0; mi < 4; ++mi) {
        if (AKC) gb_ldmatrix_x4(f.a[mi], sa + abase[ks] + mi * 16 * 64);
        else     gb_ldmatrix_x4_trans(f.a[mi], sa + abase[mi] + ks * 16 * (GB_BM * 2));
    }
#pragma unroll
    for (int np = 0; np < 4; ++np) {
        unsigned t[4];
        if (BKC) gb_ldmatrix_x4(t, sb + bbase[ks] + np * 16 * 64);
        else     gb_ldmatrix_x4_trans(t, sb + bbase[np] + ks * 16 * (GB_BN * 2));
        f.b[2 * np][0] = t[0];     f.b[2 * np][1] = t[1];
        f.b[2 * np + 1][0] = t[2]; f.b[2 * np + 1][1] = t[3];
    }
}

// VEC: both operands take the aligned path (vecA && vecB, checked by the caller).
template <bool AKC, bool BKC, bool VEC>
__device__ __forceinline__ void gemm_bf16_tile(int M, int N, int K, float alpha,
                                               const unsigned short* A, int lda, long long strideA,
                                               const unsigned short* B, int ldb, long long strideB,
                                               float beta, float* C, int ldc, long long strideC) {
#ifdef GEMM_HOST_EMULATION
    __shared__ __align__(128) unsigned char smem[GB_SMEM_BYTES];
#else
    extern __shared__ __align__(128) unsigned char smem[];
#endif

    const int tid = threadIdx.x;
    const int lane = tid & 31, warp = tid >> 5;
    const long long bz = blockIdx.z;
    A += bz * strideA;
    B += bz * strideB;
    C += bz * strideC;

    // Block rasterisation: consecutive linear block ids walk down a group of GB_GROUP row tiles
    // before moving one column tile right (a bijection of the grid onto the tiles).
    int tm, tn;
    {
        const int gx = gridDim.x, gy = gridDim.y;
        const int lin = blockIdx.y * gx + blockIdx.x;
        const int per = GB_GROUP * gx;
        const int grp = lin / per;
        const int first = grp * GB_GROUP;
        const int rows = min(gy - first, GB_GROUP);
        const int rem = lin - grp * per;
        tm = first + rem % rows;
        tn = rem / rows;
    }
    const int m0 = tm * GB_BM;
    const int n0 = tn * GB_BN;

    const bool vecA = VEC || (((lda & 7) == 0) && ((reinterpret_cast<unsigned long long>(A) & 15ull) == 0));
    const bool vecB = VEC || (((ldb & 7) == 0) && ((reinterpret_cast<unsigned long long>(B) & 15ull) == 0));

    const unsigned short* Ab = AKC ? A + (long long)m0 * lda : A + m0;
    const unsigned short* Bb = BKC ? B + (long long)n0 * ldb : B + n0;
    const int mExt = M - m0;   // >= 1
    const int nExt = N - n0;   // >= 1

    const unsigned sbase = gb_smem_addr(smem);

    // Warp tile: rows wm*64 .. +64, cols wn*64 .. +64 (block-local).
    const int wm = warp >> 2, wn = warp & 3;
    const int lr = lane & 7;          // row within an 8x8 matrix whose address this lane supplies
    const int lj = lane >> 3;         // which of the 4 matrices of an ldmatrix.x4

    // Per-lane ldmatrix byte offsets.
    //   A fragment (m16 x k16) = matrices {m0-7,k0-7}, {m8-15,k0-7}, {m0-7,k8-15}, {m8-15,k8-15}:
    //     matrix lj: m += (lj&1)*8, k += (lj>>1)*8.
    //   B fragment pair (k16 x n16 = two n8 tiles) = {n0-7,k0-7}, {n0-7,k8-15}, {n8-15,k0-7}, {n8-15,k8-15}:
    //     matrix lj: k += (lj&1)*8, n += (lj>>1)*8  -> regs {b0,b1} of n-tile 2np, then of 2np+1.
    // KC tile: row = mn (+16 per m16/n16 tile adds 16*64 bytes; the swizzle (r>>1)&3 is unchanged),
    //   chunk = k/8 depends on ks -> base[ks], ks = 0, 1.
    // !KC tile: row = k (+16 per ks adds 16 rows; the swizzle r&7 is unchanged), chunk = mn/8
    //   depends on the tile -> base[i], i = 0..3.
    unsigned abase[4], bbase[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        if (AKC) {
            const int m = wm * 64 + (lj & 1) * 8;            // mi = 0
            const int k = (i & 1) * 16 + (lj >> 1) * 8;      // ks = i & 1
            abase[i] = gb_chunk_off<true, GB_BM>(m + lr, k >> 3);
        } else {
            const int m = wm * 64 + i * 16 + (lj & 1) * 8;   // mi = i
            const int k = (lj >> 1) * 8;                     // ks = 0
            abase[i] = gb_chunk_off<false, GB_BM>(k + lr, m >> 3);
        }
        if (BKC) {
            const int n = wn * 64 + (lj >> 1) * 8;           // np = 0
            const int k = (i & 1) * 16 + (lj & 1) * 8;       // ks = i & 1
            bbase[i] = gb_chunk_off<true, GB_BN>(n + lr, k >> 3);
        } else {
            const int n = wn * 64 + i * 16 + (lj >> 1) * 8;  // np = i
            const int k = (lj & 1) * 8;                      // ks = 0
            bbase[i] = gb_chunk_off<false, GB_BN>(k + lr, n >> 3);
        }
    }

    float acc[4][8][4];
#pragma unroll
    for (int mi = 0; mi < 4; ++mi)
#pragma unroll
        for (int ni = 0; ni < 8; ++ni)
#pragma unroll
            for (int r = 0; r < 4; ++r) acc[mi][ni][r] = 0.0f;

    const int numK = (K + GB_BK - 1) / GB_BK;

    const GbVec va = gb_vec_init<AKC, GB_BM>(Ab, lda, mExt, K, tid);
    const GbVec vb = gb_vec_init<BKC, GB_BN>(Bb, ldb, nExt, K, tid);
    // K tile t -> the stage at byte offset so (block-uniform branches on vecA / vecB).
    auto load_stage = [&](int t, unsigned so) {
        if (VEC) {
            const bool kfull = (t + 1) * GB_BK <= K;
            gb_load_tile_vec<AKC, GB_BM>(va, A, lda, t, kfull && mExt >= GB_BM, sbase + so);
            gb_load_tile_vec<BKC, GB_BN>(vb, B, ldb, t, kfull && nExt >= GB_BN, sbase + so + GB_A_BYTES);
        } else {
            gb_load_tile<AKC, GB_BM>(Ab, A, lda, mExt, K, t, vecA, sbase + so, smem + so, tid);
            gb_load_tile<BKC, GB_BN>(Bb, B, ldb, nExt, K, t, vecB, sbase + so + GB_A_BYTES,
                                     smem + so + GB_A_BYTES, tid);
        }
    };

    // Prologue: tiles 0 .. STAGES-2 into stages 0 .. STAGES-2 (one commit group each, empty if
    // past the end).
#pragma unroll
    for (int s = 0; s < GB_STAGES - 1; ++s) {
        if (s < numK) load_stage(s, s * GB_STAGE_BYTES);
        gb_cp_async_commit();
    }
    // Tile 0 landed (STAGES-1 groups committed, STAGES-2 may be pending) and is visible to all.
    gb_cp_async_wait<GB_STAGES - 2>();
    __syncthreads();

    // DB (aligned path): fragments double-buffered in registers, the next k16 slice (slice 1, or
    // slice 0 of the next tile) is loaded while the mma of the current one issue. !DB (fallback
    // path, fewer registers): each slice is loaded right before its mma, all before the barrier.
    constexpr bool DB = VEC;
    GbFrag fr[DB ? 2 : 1];
    if (DB) gb_load_frag<AKC, BKC>(fr[0], sbase, 0, abase, bbase);

    int rstage = 0;                 // stage holding tile kt
    int wstage = GB_STAGES - 1;     // stage receiving tile kt + STAGES - 1 (= stage of tile kt-1)

    // Invariant at the top of iteration kt: tile kt is visible in stage rstage (DB: fr[0] holds
    // its slice 0); committed groups = STAGES-1+kt. Every read of the stage of tile kt is issued
    // before the barrier at ks = 1 of iteration kt (DB: slice 0 before iteration kt, slice 1 at
    // ks = 0; !DB: both inside iteration kt before the barrier), and that stage is only rewritten
    // at ks = 0 of iteration kt+1 (tile kt+STAGES lands in stage (kt+STAGES) % STAGES), after it.
    for (int kt = 0; kt < numK; ++kt) {
#pragma unroll
        for (int ks = 0; ks < 2; ++ks) {
            if (!DB) gb_load_frag<AKC, BKC>(fr[0], sbase + rstage * GB_STAGE_BYTES, ks, abase, bbase);
            if (ks == 1) {
                // Tile kt+1: committed groups = STAGES+kt, allow STAGES-2 pending => groups
                // 0..kt+1 complete; the barrier makes them visible to all threads.
                gb_cp_async_wait<GB_STAGES - 2>();
                __syncthreads();
                rstage = (rstage + 1 == GB_STAGES) ? 0 : rstage + 1;
            }
            // DB: next slice = slice 1 of tile kt, or slice 0 of tile kt+1 (a harmless stale read
            // when kt+1 == numK; those fragments are never used).
            if (DB)
                gb_load_frag<AKC, BKC>(fr[(ks + 1) & 1], sbase + rstage * GB_STAGE_BYTES, (ks + 1) & 1,
                                       abase, bbase);
            if (ks == 0) {
                // Refill the stage of tile kt-1 with tile kt+STAGES-1 (see the invariant).
                const int nt = kt + GB_STAGES - 1;
                if (nt < numK) load_stage(nt, wstage * GB_STAGE_BYTES);
                gb_cp_async_commit();
                wstage = (wstage + 1 == GB_STAGES) ? 0 : wstage + 1;
            }
            const GbFrag& f = fr[DB ? (ks & 1) : 0];
#pragma unroll
            for (int mi = 0; mi < 4; ++mi)
#pragma unroll
                for (int ni = 0; ni < 8; ++ni) gb_mma16816(acc[mi][ni], f.a[mi], f.b[ni]);
        }
    }

    // Epilogue. acc[mi][ni][r] is C(row, col) with
    //   row = m0 + wm*64 + mi*16 + (lane>>2) + (r>>1)*8,  col = n0 + wn*64 + ni*8 + (lane&3)*2 + (r&1).
    const bool readC = (beta != 0.0f);
    const bool vecC = ((ldc & 1) == 0) && ((reinterpret_cast<unsigned long long>(C) & 7ull) == 0);
    const int g = lane >> 2, tg = lane & 3;
#pragma unroll
    for (int mi = 0; mi < 4; ++mi) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int row = m0 + wm * 64 + mi * 16 + g + h * 8;
            if (row >= M) continue;
            float* crow = C + (long long)row * ldc;
#pragma unroll
            for (int ni = 0; ni < 8; ++ni) {
                const int col = n0 + wn * 64 + ni * 8 + tg * 2;
                float v0 = alpha * acc[mi][ni][2 * h];
                float v1 = alpha * acc[mi][ni][2 * h + 1];
                if (vecC && col + 1 < N) {
                    float2* p = reinterpret_cast<float2*>(crow + col);
                    if (readC) {
                        v0 = fmaf(beta, gb_ldc(crow + col), v0);
                        v1 = fmaf(beta, gb_ldc(crow + col + 1), v1);
                    }
                    float2 w;
                    w.x = v0; w.y = v1;
                    *p = w;
                } else {
                    if (col < N) crow[col] = readC ? fmaf(beta, gb_ldc(crow + col), v0) : v0;
                    if (col + 1 < N) crow[col + 1] = readC ? fmaf(beta, gb_ldc(crow + col + 1), v1) : v1;
                }
            }
        }
    }
}

template <bool AKC, bool BKC>
__device__ __forceinline__ void gemm_bf16_body(int M, int N, int K, float alpha,
                                               const unsigned short* A, int lda, long long strideA,
                                               const unsigned short* B, int ldb, long long strideB,
                                               float beta, float* C, int ldc, long long strideC) {
    const long long bz = blockIdx.z;
    const bool vec = ((lda & 7) == 0) && ((reinterpret_cast<unsigned long long>(A + bz * strideA) & 15ull) == 0) &&
                     ((ldb & 7) == 0) && ((reinterpret_cast<unsigned long long>(B + bz * strideB) & 15ull) == 0);
    if (vec) gemm_bf16_tile<AKC, BKC, true>(M, N, K, alpha, A, lda, strideA, B, ldb, strideB, beta, C, ldc, strideC);
    else     gemm_bf16_tile<AKC, BKC, false>(M, N, K, alpha, A, lda, strideA, B, ldb, strideB, beta, C, ldc, strideC);
}

// C = alpha * A * B + beta * C;  A: M x K (row-major, lda), B: K x N (row-major, ldb), C: M x N f32.
// blockDim (256,1,1), grid (ceil(N/256), ceil(M/128), batch), dynamic shared memory GB_SMEM_BYTES.
extern "C" __global__ void __launch_bounds__(256, 1)
gemm_bf16_nn(int M, int N, int K, float alpha, const unsigned short* A, int lda, long long strideA,
             const unsigned short* B, int ldb, long long strideB, float beta, float* C, int ldc,
             long long strideC) {
    gemm_bf16_body<true, false>(M, N, K, alpha, A, lda, strideA, B, ldb, strideB, beta, C, ldc, strideC);
}

// C = alpha * A * B^T + beta * C;  A: M x K (lda), B stored N x K (ldb), C: M x N f32.
// blockDim (256,1,1), grid (ceil(N/256), ceil(M/128), batch), dynamic shared memory GB_SMEM_BYTES.
extern "C" __global__ void __launch_bounds__(256, 1)
gemm_bf16_nt(int M, int N, int K, float alpha, const unsigned short* A, int lda, long long strideA,
             const unsigned short* B, int ldb, long long strideB, float beta, float* C, int ldc,
             long long strideC) {
    gemm_bf16_body<true, true>(M, N, K, alpha, A, lda, strideA, B, ldb, strideB, beta, C, ldc, strideC);
}

// C = alpha * A^T * B + beta * C;  A stored K x M (lda), B: K x N (ldb), C: M x N f32.
// blockDim (256,1,1), grid (ceil(N/256), ceil(M/128), batch), dynamic shared memory GB_SMEM_BYTES.
extern "C" __global__ void __launch_bounds__(256, 1)
gemm_bf16_tn(int M, int N, int K, float alpha, const unsigned short* A, int lda, long long strideA,
             const unsigned short* B, int ldb, long long strideB, float beta, float* C, int ldc,
             long long strideC) {
    gemm_bf16_body<false, false>(M, N, K, alpha, A, lda, strideA, B, ldb, strideB, beta, C, ldc, strideC);
}

// C = alpha * A^T * B^T + beta * C;  A stored K x M (lda), B stored N x K (ldb), C: M x N f32.
// blockDim (256,1,1), grid (ceil(N/256), ceil(M/128), batch), dynamic shared memory GB_SMEM_BYTES.
extern "C" __global__ void __launch_bounds__(256, 1)
gemm_bf16_tt(int M, int N, int K, float alpha, const unsigned short* A, int lda, long long strideA,
             const unsigned short* B, int ldb, long long strideB, float beta, float* C, int ldc,
             long long strideC) {
    gemm_bf16_body<false, true>(M, N, K, alpha, A, lda, strideA, B, ldb, strideB, beta, C, ldc, strideC);
}

// y[i] = bf16 bits of x[i], round to nearest even; NaN stays NaN (quiet bit forced), +-Inf stays
// +-Inf, finite values beyond the bf16 range round to +-Inf. Shape: x, y of n elements.
// Grid-stride loop: any grid, blockDim 256 (any blockDim works).
extern "C" __global__ void cast_f32_to_bf16(const float* x, unsigned short* y, int n) {
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const unsigned u = __float_as_uint(x[i]);
        unsigned short r;
        if ((u & 0x7fffffffu) > 0x7f800000u) r = (unsigned short)((u >> 16) | 0x0040u);   // NaN
        else r = (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);               // RNE
        y[i] = r;
    }
}

// y[i] = f32 value of bf16 bits x[i] (exact). Shape: x, y of n elements.
// Grid-stride loop: any grid, blockDim 256 (any blockDim works).
extern "C" __global__ void cast_bf16_to_f32(const unsigned short* x, float* y, int n) {
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        y[i] = __uint_as_float(((unsigned)x[i]) << 16);
}

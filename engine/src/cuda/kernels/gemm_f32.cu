// gemm_f32.cu — batched f32 SGEMM on CUDA cores, all matrices row-major.
//
// Self-contained for NVRTC (no #include). Entry points (unmangled, extern "C"):
//   gemm_f32_nn, gemm_f32_nt, gemm_f32_tn, gemm_f32_tt
//
// Every entry point has the parameter list
//   (int M, int N, int K, float alpha,
//    const float* A, int lda, long long strideA,
//    const float* B, int ldb, long long strideB,
//    float beta, float* C, int ldc, long long strideC)
// and computes, for batch b = blockIdx.z (A_b = A + b*strideA, likewise B, C):
//   C_b[m*ldc + n] = alpha * sum_k A_b(m,k) * B_b(k,n) + beta * C_b[m*ldc + n]
//   A(m,k) = A[m*lda + k] (first letter n) or A[k*lda + m] (first letter t)
//   B(k,n) = B[k*ldb + n] (second letter n) or B[n*ldb + k] (second letter t)
// When beta == 0, C is never read (it may hold NaN). K == 0 gives C = beta*C (0 if beta == 0).
// Any M, N >= 1, K >= 0, any leading dimensions, 4-byte aligned pointers suffice: float4 global
// loads/stores are used only where a block-uniform run-time check (ld % 4 == 0 and the batch
// pointer 16-byte aligned) allows, and only for 4-element groups fully inside the matrix.
//
// Launch geometry (fixed): blockDim = (256,1,1), gridDim = (ceil(N/128), ceil(M/128), batch),
// static shared memory 2 stages x (A + B) x 8 x 132 floats = 16,896 bytes.
//
// Design: 128x128 block tile, K-step 8, 2 blocks per SM (128-register cap). Each thread owns an
// 8x8 register block made of four 4x4 quads: rows {r0..r0+3, r0+64..r0+67}, cols {c0..c0+3,
// c0+64..c0+67}, with
//   warp = tid/32 (4 along M x 2 along N), lane = tid%32 (4 along M x 8 along N),
//   r0 = (warp>>1)*16 + (lane>>3)*4, c0 = (warp&1)*32 + (lane&7)*4.
// Shared tiles are stored k-major (S[k][mn], row pitch 132 floats) so one float4 load reads
// 4 consecutive rows (A) or cols (B). The next K tile is prefetched from global memory into
// registers while the current shared stage is consumed, then written into the other stage
// (double buffering, one __syncthreads per K tile).
// Two main loops: a fast loop for blocks where both operands may use float4 loads and every
// load unit can be kept inside the matrix (out-of-range units are clamped onto in-range data that
// only feeds accumulators the epilogue discards), with no bounds checks and one running pointer
// per operand; and a general, bounds-checked loop for the remaining blocks and the K tail.
// Block indices are swizzled (groups of 8 block rows) so concurrently running blocks share B.

#define GF_BM 128
#define GF_BN 128
#define GF_BK 8                         // K-step 16 spills at the 128-register cap (sm_80 and sm_90)
#define GF_PITCH 132                    // 128 + 4 floats: conflict-free transposing stores
#define GF_LOADS (GF_BK / 8)            // 4-float load units per thread per operand per tile
#define GF_STAGE (GF_BK * GF_PITCH)     // floats per shared stage of one operand
#define GF_SWZ 8                        // block rows per group of the block-index swizzle

#ifndef GEMM_HOST_EMULATION
// Global-memory accessors (read-only path for A and B).
__device__ __forceinline__ float gf_ld(const float* p) { return __ldg(p); }
__device__ __forceinline__ float4 gf_ld4(const float* p) { return __ldg(reinterpret_cast<const float4*>(p)); }
__device__ __forceinline__ float gf_ldc(const float* p) { return *p; }
__device__ __forceinline__ float4 gf_ldc4(const float* p) { return *reinterpret_cast<const float4*>(p); }
#endif

// Loads one unit of 4 elements of an operand tile into registers, zero outside the matrix.
// The operand is viewed as P(mn, k) with mn in [0, mnExt) and k in [0, K):
//   KC (k contiguous):   P(mn, k) = P[mn*ld + k];  the unit is (mn, k..k+3)
//   !KC (mn contiguous): P(mn, k) = P[k*ld + mn];  the unit is (mn..mn+3, k)
// p points at P(mn, k) and is dereferenced only for elements inside the matrix. The M/N checks are
// loop-invariant and come in as mask: KC: mask != 0 iff mn < mnExt; !KC: bit i set iff
// mn + i < mnExt. kRem = K - k (may be <= 0). vec: block-uniform float4 permission.
template <bool KC>
__device__ __forceinline__ void gf_load_unit(const float* p, int mask, int kRem, bool vec, float (&r)[4]) {
    if (KC) {
        if (mask != 0) {
            if (vec && kRem >= 4) {
                float4 v = gf_ld4(p);
                r[0] = v.x; r[1] = v.y; r[2] = v.z; r[3] = v.w;
            } else {
#pragma unroll
                for (int i = 0; i < 4; ++i) r[i] = (i < kRem) ? gf_ld(p + i) : 0.0f;
            }
        } else {
#pragma unroll
            for (int i = 0; i < 4; ++i) r[i] = 0.0f;
        }
    } else {
        if (kRem > 0) {
            if (vec && mask == 15) {
                float4 v = gf_ld4(p);
                r[0] = v.x; r[1] = v.y; r[2] = v.z; r[3] = v.w;
            } else {
#pragma unroll
                for (int i = 0; i < 4; ++i) r[i] = ((mask >> i) & 1) ? gf_ld(p + i) : 0.0f;
            }
        } else {
#pragma unroll
            for (int i = 0; i < 4; ++i) r[i] = 0.0f;
        }
    }
}

// Stores one unit into the k-major shared tile S[k*GF_PITCH + mn] (tile-local coordinates).
template <bool KC>
__device__ __forceinline__ void gf_store_unit(float* S, int mn, int k, const float (&r)[4]) {
    if (KC) {
#pragma unroll
        for (int i = 0; i < 4; ++i) S[(k + i) * GF_PITCH + mn] = r[i];
    } else {
        float4 v;
        v.x = r[0]; v.y = r[1]; v.z = r[2]; v.w = r[3];
        *reinterpret_cast<float4*>(&S[k * GF_PITCH + mn]) = v;
    }
}

// Tile-local coordinates of load unit u of thread tid.
template <bool KC>
__device__ __forceinline__ void gf_unit_coord(int tid, int u, int& mn, int& k) {
    if (KC) { mn = tid >> 1; k = (tid & 1) * 4 + u * 8; }     // 128 rows x (GF_BK/4) units of 4 k
    else    { k = (tid >> 5) + u * 8; mn = (tid & 31) * 4; }  // GF_BK k-rows x 32 units of 4 mn
}

// Fast path: loads this thread's units of one operand tile with plain float4 loads, p pointing
// at the thread's first unit of the tile (already clamped inside the matrix, see gemm_f32_body).
__device__ __forceinline__ void gf_load_fast(const float* p, long long uStep, float (&r)[GF_LOADS][4]) {
#pragma unroll
    for (int u = 0; u < GF_LOADS; ++u) {
        const float4 v = gf_ld4(p + u * uStep);
        r[u][0] = v.x; r[u][1] = v.y; r[u][2] = v.z; r[u][3] = v.w;
    }
}

// General path: bounds-checked loads of this thread's units of one operand tile, p pointing at
// the thread's first unit of the tile, kRem = K - (k of that unit), mask as for gf_load_unit.
template <bool KC>
__device__ __forceinline__ void gf_load_gen(const float* p, long long uStep, int mask, int kRem, bool vec,
                                            float (&r)[GF_LOADS][4]) {
#pragma unroll
    for (int u = 0; u < GF_LOADS; ++u) gf_load_unit<KC>(p + u * uStep, mask, kRem - u * 8, vec, r[u]);
}

// Stores this thread's units of one operand tile into the shared stage S.
template <bool KC>
__device__ __forceinline__ void gf_store_tile(float* S, int tid, const float (&r)[GF_LOADS][4]) {
#pragma unroll
    for (int u = 0; u < GF_LOADS; ++u) {
        int mn, k;
        gf_unit_coord<KC>(tid, u, mn, k);
        gf_store_unit<KC>(S, mn, k, r[u]);
    }
}

// One K tile of the 8x8 register block from the shared stages at aS/bS (thread offsets applied).
__device__ __forceinline__ void gf_compute_tile(const float* aS, const float* bS, float (&acc)[8][8]) {
#pragma unroll
    for (int k = 0; k < GF_BK; ++k) {
        const float4 a0 = *reinterpret_cast<const float4*>(aS + k * GF_PITCH);
        const float4 a1 = *reinterpret_cast<const float4*>(aS + k * GF_PITCH + 64);
        const float4 b0 = *reinterpret_cast<const float4*>(bS + k * GF_PITCH);
        const float4 b1 = *reinterpret_cast<const float4*>(bS + k * GF_PITCH + 64);
        const float a[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
        const float b[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
        for (int i = 0; i < 8; ++i)
#pragma unroll
            for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
}

template <bool AKC, bool BKC>
__device__ __forceinline__ void gemm_f32_body(int M, int N, int K, float alpha,
                                              const float* A, int lda, long long strideA,
                                              const float* B, int ldb, long long strideB,
                                              float beta, float* C, int ldc, long long strideC) {
    __shared__ __align__(16) float As[2 * GF_STAGE];
    __shared__ __align__(16) float Bs[2 * GF_STAGE];

    const int tid = threadIdx.x;

    // Block-index swizzle (bijective on the grid): consecutive blocks walk down groups of up to
    // GF_SWZ block rows before moving right, so blocks running together share B column panels.
    int bx, by;
    {
        const int gx = (int)gridDim.x, gy = (int)gridDim.y;
        const int pid = (int)blockIdx.y * gx + (int)blockIdx.x;
        const int per = GF_SWZ * gx;
        const int g = pid / per;
        const int fy = g * GF_SWZ;
        const int gs = min(gy - fy, GF_SWZ);
        const int r = pid - g * per;
        by = fy + r % gs;
        bx = r / gs;
    }

    const long long bz = blockIdx.z;
    A += bz * strideA;
    B += bz * strideB;
    C += bz * strideC;
    const int m0 = by * GF_BM;
    const int n0 = bx * GF_BN;

    // Block-uniform vector-path checks.
    const bool vecA = ((lda & 3) == 0) && ((reinterpret_cast<unsigned long long>(A) & 15ull) == 0);
    const bool vecB = ((ldb & 3) == 0) && ((reinterpret_cast<unsigned long long>(B) & 15ull) == 0);
    const bool vecC = ((ldc & 3) == 0) && ((reinterpret_cast<unsigned long long>(C) & 15ull) == 0);

    // Operand views: A as P(m, k) shifted by m0; B as P(n, k) shifted by n0.
    // KC pointer shift by mn0 rows: mn0*ld; !KC: mn0 columns.
    const float* Ab = AKC ? A + (long long)m0 * lda : A + m0;
    const float* Bb = BKC ? B + (long long)n0 * ldb : B + n0;
    const int mExt = M - m0;   // >= 1
    const int nExt = N - n0;   // >= 1

    const int warp = tid >> 5, lane = tid & 31;
    const int r0 = (warp >> 1) * 16 + (lane >> 3) * 4;
    const int c0 = (warp & 1) * 32 + (lane & 7) * 4;

    float acc[8][8];
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] = 0.0f;

    const int numK = (K + GF_BK - 1) / GF_BK;   // K tiles
    const int numFull = K / GF_BK;              // K tiles with every k < K

    // Fast path (block-uniform): both operands take the vector path and every load unit of this
    // thread can be pointed inside the matrix. A unit outside the block's M (N) range is clamped
    // to a unit inside it: it then feeds only accumulator rows (cols) >= M (N), which the epilogue
    // never stores, so any finite or non-finite value there is harmless. A KC unit (mn, k..k+3)
    // clamps its row mn to mnExt-1; a !KC unit (mn..mn+3, k) needs mnExt % 4 == 0 (units are then
    // entirely inside or outside) and clamps mn to mnExt-4. Fast tiles are kt < numFull, so k is
    // always inside. The thread's unit pointer advances one tile (tStep) per load.
    bool fast = vecA && vecB;
    if (!AKC) fast = fast && (mExt >= GF_BM || (mExt & 3) == 0);
    if (!BKC) fast = fast && (nExt >= GF_BN || (nExt & 3) == 0);

    float ra[GF_LOADS][4], rb[GF_LOADS][4];
    int so = 0;  // offset of the shared stage being consumed (0 or GF_STAGE)
    int kt = 0;  // K tile being consumed

    const long long uStepA = AKC ? 8 : 8LL * lda, tStepA = AKC ? GF_BK : (long long)GF_BK * lda;
    const long long uStepB = BKC ? 8 : 8LL * ldb, tStepB = BKC ? GF_BK : (long long)GF_BK * ldb;
    int maskA, maskB, kRemA, kRemB;  // general-path checks (see gf_load_unit), kRem for tile 0
    {
        // Per-thread pointers to the first unit (u = 0) of K tile 0.
        int amn, ak, bmn, bk;
        gf_unit_coord<AKC>(tid, 0, amn, ak);
        gf_unit_coord<BKC>(tid, 0, bmn, bk);
        maskA = AKC ? (amn < mExt ? 1 : 0) : (amn < mExt) | ((amn + 1 < mExt) << 1) | ((amn + 2 < mExt) << 2) | ((amn + 3 < mExt) << 3);
        maskB = BKC ? (bmn < nExt ? 1 : 0) : (bmn < nExt) | ((bmn + 1 < nExt) << 1) | ((bmn + 2 < nExt) << 2) | ((bmn + 3 < nExt) << 3);
        kRemA = K - ak;
        kRemB = K - bk;
        if (fast) {
            amn = AKC ? min(amn, mExt - 1) : min(amn, mExt - 4);
            bmn = BKC ? min(bmn, nExt - 1) : min(bmn, nExt - 4);
        }
        Ab += AKC ? (long long)amn * lda + ak : (long long)ak * lda + amn;
        Bb += BKC ? (long long)bmn * ldb + bk : (long long)bk * ldb + bmn;
    }

    if (fast && numFull > 0) {
        gf_load_fast(Ab, uStepA, ra);
        gf_load_fast(Bb, uStepB, rb);
        gf_store_tile<AKC>(As, tid, ra);
        gf_store_tile<BKC>(Bs, tid, rb);
        __syncthreads();
        for (; kt + 1 < numFull; ++kt) {
            Ab += tStepA;
            Bb += tStepB;
            gf_load_fast(Ab, uStepA, ra);
            gf_load_fast(Bb, uStepB, rb);
            gf_compute_tile(As + so + r0, Bs + so + c0, acc);
            so ^= GF_STAGE;
            gf_store_tile<AKC>(As + so, tid, ra);
            gf_store_tile<BKC>(Bs + so, tid, rb);
            __syncthreads();
        }
        // Now kt == numFull - 1: Ab/Bb point at tile kt, which stage so holds; the general loop
        // below consumes it and loads the K tail, if any.
    } else if (numK > 0) {
        gf_load_gen<AKC>(Ab, uStepA, maskA, kRemA, vecA, ra);
        gf_load_gen<BKC>(Bb, uStepB, maskB, kRemB, vecB, rb);
        gf_store_tile<AKC>(As, tid, ra);
        gf_store_tile<BKC>(Bs, tid, rb);
        __syncthreads();
    }

    // General loop: edge / unaligned blocks entirely, and the last full tile plus the K tail of
    // fast blocks. For a fast block the pointers may be clamped; gf_load_gen then zero-fills the
    // out-of-range units by the true (mn, k) checks and loads the in-range ones, whose pointers
    // were not changed by clamping (clamping only moves units with mn outside the block's range).
    for (; kt < numK; ++kt) {
        const bool more = (kt + 1 < numK);
        if (more) {
            Ab += tStepA;
            Bb += tStepB;
            const int kb = (kt + 1) * GF_BK;
            gf_load_gen<AKC>(Ab, uStepA, maskA, kRemA - kb, vecA, ra);
            gf_load_gen<BKC>(Bb, uStepB, maskB, kRemB - kb, vecB, rb);
        }
        gf_compute_tile(As + so + r0, Bs + so + c0, acc);
        so ^= GF_STAGE;
        if (more) {
            gf_store_tile<AKC>(As + so, tid, ra);
            gf_store_tile<BKC>(Bs + so, tid, rb);
        }
        __syncthreads();
    }

    // Epilogue: acc[i][j] is C(m0 + r0 + (i&3) + (i>>2)*64, n0 + c0 + (j&3) + (j>>2)*64).
    const bool readC = (beta != 0.0f);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const int gm = m0 + r0 + (i & 3) + (i >> 2) * 64;
        if (gm >= M) continue;
        float* crow = C + (long long)gm * ldc;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int gn = n0 + c0 + h * 64;
            float v[4];
#pragma unroll
            for (int j = 0; j < 4; ++j) v[j] = alpha * acc[i][h * 4 + j];
            if (vecC && gn + 3 < N) {
                if (readC) {
                    const float4 o = gf_ldc4(crow + gn);
                    v[0] = fmaf(beta, o.x, v[0]);
                    v[1] = fmaf(beta, o.y, v[1]);
                    v[2] = fmaf(beta, o.z, v[2]);
                    v[3] = fmaf(beta, o.w, v[3]);
                }
                float4 w;
                w.x = v[0]; w.y = v[1]; w.z = v[2]; w.w = v[3];
                *reinterpret_cast<float4*>(crow + gn) = w;
            } else {
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    if (gn + j < N) {
                        float* p = crow + gn + j;
                        *p = readC ? fmaf(beta, gf_ldc(p), v[j]) : v[j];
                    }
                }
            }
        }
    }
}

// C = alpha * A * B + beta * C;  A: M x K (row-major, lda), B: K x N (row-major, ldb), C: M x N.
// blockDim (256,1,1), grid (ceil(N/128), ceil(M/128), batch).
extern "C" __global__ void __launch_bounds__(256, 2)
gemm_f32_nn(int M, int N, int K, float alpha, const float* A, int lda, long long strideA,
            const float* B, int ldb, long long strideB, float beta, float* C, int ldc, long long strideC) {
    gemm_f32_body<true, false>(M, N, K, alpha, A, lda, strideA, B, ldb, strideB, beta, C, ldc, strideC);
}

// C = alpha * A * B^T + beta * C;  A: M x K (lda), B stored N x K (ldb), C: M x N.
// blockDim (256,1,1), grid (ceil(N/128), ceil(M/128), batch).
extern "C" __global__ void __launch_bounds__(256, 2)
gemm_f32_nt(int M, int N, int K, float alpha, const float* A, int lda, long long strideA,
            const float* B, int ldb, long long strideB, float beta, float* C, int ldc, long long strideC) {
    gemm_f32_body<true, true>(M, N, K, alpha, A, lda, strideA, B, ldb, strideB, beta, C, ldc, strideC);
}

// C = alpha * A^T * B + beta * C;  A stored K x M (lda), B: K x N (ldb), C: M x N.
// blockDim (256,1,1), grid (ceil(N/128), ceil(M/128), batch).
extern "C" __global__ void __launch_bounds__(256, 2)
gemm_f32_tn(int M, int N, int K, float alpha, const float* A, int lda, long long strideA,
            const float* B, int ldb, long long strideB, float beta, float* C, int ldc, long long strideC) {
    gemm_f32_body<false, false>(M, N, K, alpha, A, lda, strideA, B, ldb, strideB, beta, C, ldc, strideC);
}

// C = alpha * A^T * B^T + beta * C;  A stored K x M (lda), B stored N x K (ldb), C: M x N.
// blockDim (256,1,1), grid (ceil(N/128), ceil(M/128), batch).
extern "C" __global__ void __launch_bounds__(256, 2)
gemm_f32_tt(int M, int N, int K, float alpha, const float* A, int lda, long long strideA,
            const float* B, int ldb, long long strideB, float beta, float* C, int ldc, long long strideC) {
    gemm_f32_body<false, true>(M, N, K, alpha, A, lda, strideA, B, ldb, strideB, beta, C, ldc, strideC);
}

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
// Launch geometry (fixed): blockDim = (256,1,1) = 8 warps, gridDim = (ceil(N/128), ceil(M/128), batch).
// Static shared memory: 3 stages x (A 128x32 + B 32x128) bf16 = 3 x 16 KiB = 48 KiB (49,152 bytes).
//
// Design: block tile 128x128, K-step 32, 3-stage shared-memory pipeline. Warp w computes the
// 64x32 sub-tile rows (w>>2)*64.., cols (w&3)*32.. as 4 (m16) x 4 (n8) mma tiles, 64 f32
// accumulators per thread. Each operand tile keeps the memory order of its source so that 16-byte
// chunks copy straight from global memory:
//   k-contiguous operand (A 'n', B 't'): tile [128 mn][32 k], 64-byte rows, 4 chunks of 8 k;
//       chunk c of row r lives at r*64 + ((c ^ ((r>>1)&3)) * 16)          -> ldmatrix (no .trans)
//   mn-contiguous operand (A 't', B 'n'): tile [32 k][128 mn], 256-byte rows, 16 chunks of 8 mn;
//       chunk c of row r lives at r*256 + ((c ^ (r&7)) * 16)               -> ldmatrix .trans
// (XOR swizzles make every ldmatrix phase conflict-free.) Each tile is 512 chunks, 2 per thread.
// Aligned path (per operand, block-uniform run-time check: ld % 8 == 0 and the batch pointer
// 16-byte aligned): cp.async.cg 16-byte copies, with src-size < 16 zero-filling a partial chunk at
// the matrix edge / K tail and src-size 0 zero-filling chunks fully outside. Otherwise: guarded
// 2-byte loads, zero outside the matrix, one 16-byte shared store per chunk. Every element of a
// stage is rewritten for every K tile, so padding is always exact zeros.

#define GB_BM 128
#define GB_BN 128
#define GB_BK 32
#define GB_STAGES 3
#define GB_TILE_BYTES (GB_BM * GB_BK * 2)          // 8192: one operand tile
#define GB_STAGE_BYTES (2 * GB_TILE_BYTES)          // A tile then B tile

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
#endif

// Byte offset of 16-byte chunk c of row r inside one operand tile (see the layout above).
template <bool KC>
__device__ __forceinline__ unsigned gb_chunk_off(int r, int c) {
    return KC ? (unsigned)(r * 64 + ((c ^ ((r >> 1) & 3)) << 4))
              : (unsigned)(r * 256 + ((c ^ (r & 7)) << 4));
}

// Loads K tile `kt` of one operand into the tile at shared address `dst` (generic pointer dstp).
// The operand is viewed as P(mn, k), mn in [0, mnExt) relative to the block, k in [0, K):
//   KC:  P(mn, k) = P[mn*ld + k]       !KC: P(mn, k) = P[k*ld + mn]
// `P` already points at the block's first mn; `base` is the batch's element (0,0) (always valid).
template <bool KC>
__device__ __forceinline__ void gb_load_tile(const unsigned short* P, const unsigned short* base, int ld,
                                             int mnExt, int K, int kt, bool vec, unsigned dst,
                                             unsigned char* dstp, int tid) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        const int q = tid + i * 256;
        int r, c, mn, k;
        if (KC) { r = q >> 2; c = q & 3;  mn = r;     k = kt * GB_BK + c * 8; }  // 8 elements along k
        else    { r = q >> 4; c = q & 15; mn = c * 8; k = kt * GB_BK + r;     }  // 8 elements along mn
        const unsigned off = gb_chunk_off<KC>(r, c);
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

template <bool AKC, bool BKC>
__device__ __forceinline__ void gemm_bf16_body(int M, int N, int K, float alpha,
                                               const unsigned short* A, int lda, long long strideA,
                                               const unsigned short* B, int ldb, long long strideB,
                                               float beta, float* C, int ldc, long long strideC) {
    __shared__ __align__(128) unsigned char smem[GB_STAGES * GB_STAGE_BYTES];

    const int tid = threadIdx.x;
    const int lane = tid & 31, warp = tid >> 5;
    const long long bz = blockIdx.z;
    A += bz * strideA;
    B += bz * strideB;
    C += bz * strideC;
    const int m0 = blockIdx.y * GB_BM;
    const int n0 = blockIdx.x * GB_BN;

    const bool vecA = ((lda & 7) == 0) && ((reinterpret_cast<unsigned long long>(A) & 15ull) == 0);
    const bool vecB = ((ldb & 7) == 0) && ((reinterpret_cast<unsigned long long>(B) & 15ull) == 0);

    const unsigned short* Ab = AKC ? A + (long long)m0 * lda : A + m0;
    const unsigned short* Bb = BKC ? B + (long long)n0 * ldb : B + n0;
    const int mExt = M - m0;   // >= 1
    const int nExt = N - n0;   // >= 1

    const unsigned sbase = gb_smem_addr(smem);

    // Warp tile: rows wm*64 .. +64, cols wn*32 .. +32 (block-local).
    const int wm = warp >> 2, wn = warp & 3;
    const int lr = lane & 7;          // row within an 8x8 matrix whose address this lane supplies
    const int lj = lane >> 3;         // which of the 4 matrices of an ldmatrix.x4

    // Per-lane ldmatrix byte offsets inside a tile, for k16 step ks (0/1) and sub-tile mi / np.
    //   A fragment (m16 x k16) = matrices {m0-7,k0-7}, {m8-15,k0-7}, {m0-7,k8-15}, {m8-15,k8-15}:
    //     matrix lj: m += (lj&1)*8, k += (lj>>1)*8.
    //   B fragment pair (k16 x n16 = two n8 tiles) = {n0-7,k0-7}, {n0-7,k8-15}, {n8-15,k0-7}, {n8-15,k8-15}:
    //     matrix lj: k += (lj&1)*8, n += (lj>>1)*8  -> regs {b0,b1} of n-tile 2np, then of 2np+1.
    unsigned aoff[2][4], boff[2][2];
#pragma unroll
    for (int ks = 0; ks < 2; ++ks) {
#pragma unroll
        for (int mi = 0; mi < 4; ++mi) {
            const int m = wm * 64 + mi * 16 + (lj & 1) * 8;   // first m of this lane's matrix
            const int k = ks * 16 + (lj >> 1) * 8;            // first k of this lane's matrix
            aoff[ks][mi] = AKC ? gb_chunk_off<true>(m + lr, k >> 3)      // row m+lr, chunk k/8
                               : gb_chunk_off<false>(k + lr, m >> 3);    // row k+lr, chunk m/8
        }
#pragma unroll
        for (int np = 0; np < 2; ++np) {
            const int n = wn * 32 + np * 16 + (lj >> 1) * 8;
            const int k = ks * 16 + (lj & 1) * 8;
            boff[ks][np] = BKC ? gb_chunk_off<true>(n + lr, k >> 3)
                               : gb_chunk_off<false>(k + lr, n >> 3);
        }
    }

    float acc[4][4][4];
#pragma unroll
    for (int mi = 0; mi < 4; ++mi)
#pragma unroll
        for (int ni = 0; ni < 4; ++ni)
#pragma unroll
            for (int r = 0; r < 4; ++r) acc[mi][ni][r] = 0.0f;

    const int numK = (K + GB_BK - 1) / GB_BK;

    // Prologue: tiles 0 .. STAGES-2 (one commit group each, empty if past the end).
#pragma unroll
    for (int s = 0; s < GB_STAGES - 1; ++s) {
        if (s < numK) {
            const unsigned so = s * GB_STAGE_BYTES;
            gb_load_tile<AKC>(Ab, A, lda, mExt, K, s, vecA, sbase + so, smem + so, tid);
            gb_load_tile<BKC>(Bb, B, ldb, nExt, K, s, vecB, sbase + so + GB_TILE_BYTES,
                              smem + so + GB_TILE_BYTES, tid);
        }
        gb_cp_async_commit();
    }

    for (int kt = 0; kt < numK; ++kt) {
        // Groups committed so far: STAGES-1+kt; allowing STAGES-2 pending => tile kt has landed.
        gb_cp_async_wait<GB_STAGES - 2>();
        __syncthreads();   // tile kt visible to all; everyone is done reading tile kt-1's stage

        {   // refill the stage consumed in iteration kt-1 with tile kt+STAGES-1
            const int nt = kt + GB_STAGES - 1;
            if (nt < numK) {
                const unsigned so = (nt % GB_STAGES) * GB_STAGE_BYTES;
                gb_load_tile<AKC>(Ab, A, lda, mExt, K, nt, vecA, sbase + so, smem + so, tid);
                gb_load_tile<BKC>(Bb, B, ldb, nExt, K, nt, vecB, sbase + so + GB_TILE_BYTES,
                                  smem + so + GB_TILE_BYTES, tid);
            }
            gb_cp_async_commit();
        }

        const unsigned sa = sbase + (kt % GB_STAGES) * GB_STAGE_BYTES;
        const unsigned sb = sa + GB_TILE_BYTES;
#pragma unroll
        for (int ks = 0; ks < 2; ++ks) {
            unsigned af[4][4], bfr[4][2];
#pragma unroll
            for (int mi = 0; mi < 4; ++mi) {
                if (AKC) gb_ldmatrix_x4(af[mi], sa + aoff[ks][mi]);
                else     gb_ldmatrix_x4_trans(af[mi], sa + aoff[ks][mi]);
            }
#pragma unroll
            for (int np = 0; np < 2; ++np) {
                unsigned t[4];
                if (BKC) gb_ldmatrix_x4(t, sb + boff[ks][np]);
                else     gb_ldmatrix_x4_trans(t, sb + boff[ks][np]);
                bfr[2 * np][0] = t[0];     bfr[2 * np][1] = t[1];
                bfr[2 * np + 1][0] = t[2]; bfr[2 * np + 1][1] = t[3];
            }
#pragma unroll
            for (int mi = 0; mi < 4; ++mi)
#pragma unroll
                for (int ni = 0; ni < 4; ++ni) gb_mma16816(acc[mi][ni], af[mi], bfr[ni]);
        }
    }

    // Epilogue. acc[mi][ni][r] is C(row, col) with
    //   row = m0 + wm*64 + mi*16 + (lane>>2) + (r>>1)*8,  col = n0 + wn*32 + ni*8 + (lane&3)*2 + (r&1).
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
            for (int ni = 0; ni < 4; ++ni) {
                const int col = n0 + wn * 32 + ni * 8 + tg * 2;
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

// C = alpha * A * B + beta * C;  A: M x K (row-major, lda), B: K x N (row-major, ldb), C: M x N f32.
// blockDim (256,1,1), grid (ceil(N/128), ceil(M/128), batch).
extern "C" __global__ void __launch_bounds__(256, 2)
gemm_bf16_nn(int M, int N, int K, float alpha, const unsigned short* A, int lda, long long strideA,
             const unsigned short* B, int ldb, long long strideB, float beta, float* C, int ldc,
             long long strideC) {
    gemm_bf16_body<true, false>(M, N, K, alpha, A, lda, strideA, B, ldb, strideB, beta, C, ldc, strideC);
}

// C = alpha * A * B^T + beta * C;  A: M x K (lda), B stored N x K (ldb), C: M x N f32.
// blockDim (256,1,1), grid (ceil(N/128), ceil(M/128), batch).
extern "C" __global__ void __launch_bounds__(256, 2)
gemm_bf16_nt(int M, int N, int K, float alpha, const unsigned short* A, int lda, long long strideA,
             const unsigned short* B, int ldb, long long strideB, float beta, float* C, int ldc,
             long long strideC) {
    gemm_bf16_body<true, true>(M, N, K, alpha, A, lda, strideA, B, ldb, strideB, beta, C, ldc, strideC);
}

// C = alpha * A^T * B + beta * C;  A stored K x M (lda), B: K x N (ldb), C: M x N f32.
// blockDim (256,1,1), grid (ceil(N/128), ceil(M/128), batch).
extern "C" __global__ void __launch_bounds__(256, 2)
gemm_bf16_tn(int M, int N, int K, float alpha, const unsigned short* A, int lda, long long strideA,
             const unsigned short* B, int ldb, long long strideB, float beta, float* C, int ldc,
             long long strideC) {
    gemm_bf16_body<false, false>(M, N, K, alpha, A, lda, strideA, B, ldb, strideB, beta, C, ldc, strideC);
}

// C = alpha * A^T * B^T + beta * C;  A stored K x M (lda), B stored N x K (ldb), C: M x N f32.
// blockDim (256,1,1), grid (ceil(N/128), ceil(M/128), batch).
extern "C" __global__ void __launch_bounds__(256, 2)
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

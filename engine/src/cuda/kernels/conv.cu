// Convolution layout kernels (f32, NCHW, contiguous): im2col / col2im around the GEMM (the GEMM
// itself lives in gemm_f32.cu), direct depthwise convolution (groups == C == Cout, ConvNeXt's
// 7x7) with its two backward passes, and the per-channel bias add / bias gradient.
//
// Semantics follow engine/src/cpu/conv.rs and engine/src/cpu/conv_dw.rs (PyTorch Conv2d):
// input position of output o and tap k along an axis is o*stride - pad + k*dilation; taps that
// fall outside the input read zero.
//
// Launch geometry: elementwise-style kernels use a grid-stride loop over their work items with
// blockDim.x = 256 (any value works) and any gridDim (the Rust side launches
// min(ceil(work/256), 65535) blocks). Block-per-item kernels (dwconv_bwd_weight_f32,
// channel_sum_nchw_f32) need blockDim.x a multiple of 32 (at most 1024; the Rust side uses 256)
// and loop over their items when gridDim.x is smaller than the item count. No atomics anywhere:
// every result has a fixed summation order for a given launch geometry.
// Self-contained: no #include.

// First index of this thread and the stride of a grid-stride loop (1-D blocks, 1-D or 2-D grid).
__device__ __forceinline__ long long first_index() {
    long long block = (long long)blockIdx.y * gridDim.x + blockIdx.x;
    return block * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ long long index_stride() {
    return (long long)blockDim.x * gridDim.x * gridDim.y;
}
#define FOR_EACH(i, n) for (long long i = first_index(); i < (long long)(n); i += index_stride())

// Sum of v over the whole block; every thread gets the result. blockDim.x must be a multiple of
// 32 (<= 1024). Contains __syncthreads: all threads of the block must call it.
__device__ float block_sum(float v) {
    __shared__ float sh[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();  // a previous call may still be reading sh
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    v = lane < nwarps ? sh[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// ---------------------------------------------------------------------------------------------
// im2col_f32: x [N, C, H, W] -> col [N][C*KH*KW][HO*WO] with
//   col[n][(c*KH + kh)*KW + kw][oy*WO + ox] = x[n][c][oy*SH - PH + kh*DH][ox*SW - PW + kw*DW]
// (0 where that position is outside the input). Group-agnostic: group g's rows are the
// contiguous block of channels g*C/G .. (g+1)*C/G.
// One thread per col element, grid-stride over N*C*KH*KW*HO*WO (64-bit indices).
extern "C" __global__ void im2col_f32(const float* x, float* col, int N, int C, int H, int W, int KH, int KW,
                                      int SH, int SW, int PH, int PW, int DH, int DW, int HO, int WO) {
    long long L = (long long)HO * WO;
    long long total = (long long)N * C * KH * KW * L;
    FOR_EACH(i, total) {
        int pos = (int)(i % L);
        long long row = i / L;  // n*C*KH*KW + (c*KH + kh)*KW + kw
        int ox = pos % WO, oy = pos / WO;
        int kw = (int)(row % KW);
        long long t = row / KW;
        int kh = (int)(t % KH);
        long long plane = t / KH;  // n*C + c
        int iy = oy * SH - PH + kh * DH;
        int ix = ox * SW - PW + kw * DW;
        float v = 0.0f;
        if (iy >= 0 && iy < H && ix >= 0 && ix < W) v = x[(plane * H + iy) * W + ix];
        col[i] = v;
    }
}

// col2im_f32: the adjoint of im2col_f32 (same parameters): x [N, C, H, W] is overwritten with
//   x[n][c][y][x] = sum over (kh, kw) of col[n][(c*KH + kh)*KW + kw][oy*WO + ox]
// for the (oy, ox) with oy*SH - PH + kh*DH = y and ox*SW - PW + kw*DW = x (when such an output
// position exists). Gather form, taps in (kh, kw) order as the CPU's col2im adds them.
// One thread per x element, grid-stride over N*C*H*W (64-bit indices).
extern "C" __global__ void col2im_f32(const float* col, float* x, int N, int C, int H, int W, int KH, int KW,
                                      int SH, int SW, int PH, int PW, int DH, int DW, int HO, int WO) {
    long long L = (long long)HO * WO;
    long long total = (long long)N * C * H * W;
    FOR_EACH(i, total) {
        int ix = (int)(i % W);
        long long t = i / W;
        int iy = (int)(t % H);
        long long plane = t / H;  // n*C + c
        // Rows of this (n, c) in col start at plane*KH*KW (row index n*C*KH*KW + c*KH*KW).
        const float* colp = col + plane * KH * KW * L;
        float acc = 0.0f;
        for (int kh = 0; kh < KH; ++kh) {
            int ty = iy + PH - kh * DH;  // = oy*SH
            if (ty < 0 || ty % SH != 0) continue;
            int oy = ty / SH;
            if (oy >= HO) continue;
            for (int kw = 0; kw < KW; ++kw) {
                int tx = ix + PW - kw * DW;  // = ox*SW
                if (tx < 0 || tx % SW != 0) continue;
                int ox = tx / SW;
                if (ox >= WO) continue;
                acc += colp[(long long)(kh * KW + kw) * L + oy * WO + ox];
            }
        }
        x[i] = acc;
    }
}

// ---------------------------------------------------------------------------------------------
// Depthwise convolution: groups == C == Cout, square K x K filter, stride S, padding P,
// dilation 1 (the Rust side routes other depthwise geometries to im2col + grouped GEMM).
// x [N, C, H, W], w [C, 1, K, K], y [N, C, HO, WO].

// dwconv_fwd_f32: y[n][c][oy][ox] = bias[c] + sum_{kh,kw} w[c][kh][kw] * x[n][c][oy*S-P+kh][ox*S-P+kw]
// (bias may be nullptr = none; taps outside the input contribute nothing). Taps in (kh, kw)
// order starting from the bias, as the CPU's plane loop.
// One thread per output element, grid-stride over N*C*HO*WO.
extern "C" __global__ void dwconv_fwd_f32(const float* x, const float* w, const float* bias, float* y, int N,
                                          int C, int H, int W, int K, int S, int P, int HO, int WO) {
    long long L = (long long)HO * WO;
    long long total = (long long)N * C * L;
    FOR_EACH(i, total) {
        int pos = (int)(i % L);
        long long plane = i / L;  // n*C + c
        int c = (int)(plane % C);
        int ox = pos % WO, oy = pos / WO;
        const float* xp = x + plane * H * W;
        const float* wc = w + (long long)c * K * K;
        float acc = bias ? bias[c] : 0.0f;
        for (int kh = 0; kh < K; ++kh) {
            int iy = oy * S - P + kh;
            if (iy < 0 || iy >= H) continue;
            for (int kw = 0; kw < K; ++kw) {
                int ix = ox * S - P + kw;
                if (ix < 0 || ix >= W) continue;
                acc += wc[kh * K + kw] * xp[iy * W + ix];
            }
        }
        y[i] = acc;
    }
}

// dwconv_bwd_input_f32: gx [N, C, H, W] (overwritten) from gy [N, C, HO, WO]:
//   gx[n][c][iy][ix] = sum over taps (kh, kw) with iy = oy*S - P + kh, ix = ox*S - P + kw for an
//   output position (oy, ox) in range, of w[c][kh][kw] * gy[n][c][oy][ox].
// Gather form, no atomics. One thread per gx element, grid-stride over N*C*H*W.
extern "C" __global__ void dwconv_bwd_input_f32(const float* gy, const float* w, float* gx, int N, int C, int H,
                                                int W, int K, int S, int P, int HO, int WO) {
    long long HW = (long long)H * W;
    long long total = (long long)N * C * HW;
    FOR_EACH(i, total) {
        int pos = (int)(i % HW);
        long long plane = i / HW;  // n*C + c
        int c = (int)(plane % C);
        int ix = pos % W, iy = pos / W;
        const float* gp = gy + plane * HO * WO;
        const float* wc = w + (long long)c * K * K;
        float acc = 0.0f;
        for (int kh = 0; kh < K; ++kh) {
            int ty = iy + P - kh;  // = oy*S
            if (ty < 0 || ty % S != 0) continue;
            int oy = ty / S;
            if (oy >= HO) continue;
            for (int kw = 0; kw < K; ++kw) {
                int tx = ix + P - kw;  // = ox*S
                if (tx < 0 || tx % S != 0) continue;
                int ox = tx / S;
                if (ox >= WO) continue;
                acc += wc[kh * K + kw] * gp[oy * WO + ox];
            }
        }
        gx[i] = acc;
    }
}

// dwconv_bwd_weight_f32: gw [C, 1, K, K] (overwritten) from x [N, C, H, W] and gy [N, C, HO, WO]:
//   gw[c][kh][kw] = sum_{n,oy,ox} gy[n][c][oy][ox] * x[n][c][oy*S-P+kh][ox*S-P+kw]  (in-range taps)
// One block per (c, kh, kw) (blockIdx.x = (c*K + kh)*K + kw; blocks loop when gridDim.x < C*K*K),
// blockDim.x 256 (a multiple of 32), block reduction over N*HO*WO; deterministic.
extern "C" __global__ void dwconv_bwd_weight_f32(const float* x, const float* gy, float* gw, int N, int C, int H,
                                                 int W, int K, int S, int P, int HO, int WO) {
    int L = HO * WO;
    long long count = (long long)N * L;
    for (int t = blockIdx.x; t < C * K * K; t += gridDim.x) {
        int kw = t % K, kh = (t / K) % K, c = t / (K * K);
        float acc = 0.0f;
        for (long long j = threadIdx.x; j < count; j += blockDim.x) {
            int n = (int)(j / L), pos = (int)(j % L);
            int ox = pos % WO, oy = pos / WO;
            int iy = oy * S - P + kh, ix = ox * S - P + kw;
            if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
            long long plane = (long long)n * C + c;
            acc += gy[plane * L + pos] * x[(plane * H + iy) * W + ix];
        }
        acc = block_sum(acc);
        if (threadIdx.x == 0) gw[t] = acc;
    }
}

// ---------------------------------------------------------------------------------------------
// bias_add_nchw_f32: y [N, C, HW] in place, y[n][c][s] += bias[c].
// Grid-stride over N*C*HW.
extern "C" __global__ void bias_add_nchw_f32(float* y, const float* bias, int N, int C, int HW) {
    long long total = (long long)N * C * HW;
    FOR_EACH(i, total) y[i] += bias[(int)((i / HW) % C)];
}

// channel_sum_nchw_f32: y[c] = sum over n, s of x[n][c][s], x [N, C, HW], y [C] (overwritten; 0
// when N*HW = 0). The bias gradient of a conv. One block per channel (blocks loop over channels
// when gridDim.x < C), blockDim.x 256 (a multiple of 32); deterministic.
extern "C" __global__ void channel_sum_nchw_f32(const float* x, float* y, int N, int C, int HW) {
    long long count = (long long)N * HW;
    for (int c = blockIdx.x; c < C; c += gridDim.x) {
        float acc = 0.0f;
        for (long long j = threadIdx.x; j < count; j += blockDim.x) {
            long long n = j / HW, s = j % HW;
            acc += x[(n * C + c) * HW + s];
        }
        acc = block_sum(acc);
        if (threadIdx.x == 0) y[c] = acc;
    }
}

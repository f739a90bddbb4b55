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
// min(ceil(work/256), 65535) blocks; min(ceil(work/1024), 65535) for dwconv_fwd_f32 and
// dwconv_bwd_input_f32, which loop over output tiles and take at most 256 threads).
// Block-per-item kernels (dwconv_bwd_weight_f32: one block per channel; channel_sum_nchw_f32)
// need blockDim.x a multiple of 32 (at most 1024; the Rust side uses 256) and loop over their
// items when gridDim.x is smaller than the item count. No atomics anywhere:
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
//
// Fast paths (stride 1, K in {3, 5, 7}; the input gradient as the forward of gy with the flipped
// filter and padding K-1-P): tiled direct convolution. A tile is PB planes x TH = GY*DW_R output
// rows x TW output columns; its input window (TH+K-1 rows x TW+K-1 columns per plane, zeros
// outside the input) is staged in shared memory, and each thread computes DW_R vertically
// consecutive outputs of one column, reusing a register window of DW_R+K-1 input values per
// filter column. Other geometries (and any tile that would not fit DW_CAP floats) take the
// one-thread-per-element paths. Every kernel works with any gridDim (blocks loop over tiles /
// items); blockDim.x: 256 (the forward and input gradient are built for at most 256 threads,
// __launch_bounds__(256, 4); the weight gradient takes any multiple of 32 up to 1024).

#define DW_R 8        // outputs per thread, along y
#define DW_CAP 8192   // floats of shared memory per block (32 KiB)

struct DwTile {
    int TW, GY, PB, pitch, IH, tiles_x, tiles_y;
    long long total;  // tiles = ceil(NP / PB) * tiles_y * tiles_x
};

// Tile geometry for NP planes of HO x WO outputs (filter K, stride S, NT threads, wslot floats
// of shared memory per plane besides the input window). Same result in every thread. Returns
// false when no tile fits (or there is no work): the caller takes its general path.
__device__ __forceinline__ bool dw_tile(DwTile& t, long long NP, int HO, int WO, int K, int S, int wslot, int NT) {
    if (NP < 1 || HO < 1 || WO < 1 || NT < 1) return false;
    int twmax = NT < 64 ? NT : 64;
    t.tiles_x = (WO + twmax - 1) / twmax;
    t.TW = (WO + t.tiles_x - 1) / t.tiles_x;  // <= twmax <= NT
    t.pitch = (t.TW - 1) * S + K;
    int gy_plane = (HO + DW_R - 1) / DW_R;
    int GY = NT / t.TW;
    if (GY > gy_plane) GY = gy_plane;
    while (GY > 0 && (long long)((GY * DW_R - 1) * S + K) * t.pitch + wslot > DW_CAP) --GY;
    if (GY < 1) return false;
    t.GY = GY;
    t.IH = (GY * DW_R - 1) * S + K;
    int PB = 1;
    if (GY == gy_plane) {  // whole planes: several per tile when the threads allow
        PB = NT / (GY * t.TW);
        int fit = DW_CAP / (t.IH * t.pitch + wslot);
        if (PB > fit) PB = fit;
        if ((long long)PB > NP) PB = (int)NP;
        if (PB < 1) PB = 1;
    }
    t.PB = PB;
    int TH = GY * DW_R;
    t.tiles_y = (HO + TH - 1) / TH;
    t.total = ((NP + PB - 1) / PB) * t.tiles_y * t.tiles_x;
    return true;
}

// Stage PB planes' input windows: sx[p][row][col] = in[(p0+p)*pmul + padd][iy0+row][ix0+col]
// (zero outside the input or when p0+p >= NP). No synchronisation inside.
__device__ __forceinline__ void dw_stage(float* sx, const float* in, long long p0, long long NP, long long pmul,
                                         long long padd, int HI, int WI, int iy0, int ix0, const DwTile& t) {
    const int plane_sz = t.IH * t.pitch;
    for (int i = threadIdx.x; i < t.PB * plane_sz; i += blockDim.x) {
        int p = i / plane_sz, r = i - p * plane_sz;
        int row = r / t.pitch, col = r - row * t.pitch;
        int iy = iy0 + row, ix = ix0 + col;
        float v = 0.0f;
        if (p0 + p < NP && iy >= 0 && iy < HI && ix >= 0 && ix < WI)
            v = in[(((p0 + p) * pmul + padd) * HI + iy) * WI + ix];
        sx[i] = v;
    }
}

// out[pl][oy][ox] = bias[pl % C] + sum_{kh,kw} wt[kh][kw] * in[pl][oy - P + kh][ox - P + kw],
// stride 1, pl < NP; wt = w[pl % C] (flip: rotated by 180 degrees). in [NP, HI, WI],
// out [NP, HO, WO]. t from dw_tile(NP, HO, WO, K, 1, K*K, blockDim.x).
template <int K>
__device__ void dw_fwd_tiled(const float* in, const float* w, const float* bias, float* out, long long NP, int C,
                             int HI, int WI, int P, int HO, int WO, bool flip, const DwTile& t, float* sm) {
    const int KK = K * K;
    const int tid = threadIdx.x, NT = blockDim.x;
    const int plane_sz = t.IH * t.pitch, tpp = t.GY * t.TW, TH = t.GY * DW_R;
    float* sw = sm;               // [PB][K*K] filters
    float* sx = sm + t.PB * KK;   // [PB][IH][pitch] input windows
    const int pb = tid / tpp, rem = tid - pb * tpp, gy = rem / t.TW, lx = rem - gy * t.TW;
    for (long long tile = blockIdx.x; tile < t.total; tile += gridDim.x) {
        int tx = (int)(tile % t.tiles_x);
        long long q = tile / t.tiles_x;
        int ty = (int)(q % t.tiles_y);
        long long p0 = (q / t.tiles_y) * t.PB;
        int ox0 = tx * t.TW, oy0 = ty * TH;
        __syncthreads();  // the previous tile's readers are done
        for (int i = tid; i < t.PB * KK; i += NT) {
            int p = i / KK, k = i - p * KK;
            float v = 0.0f;
            if (p0 + p < NP) v = w[((p0 + p) % C) * KK + (flip ? KK - 1 - k : k)];
            sw[i] = v;
        }
        dw_stage(sx, in, p0, NP, 1, 0, HI, WI, oy0 - P, ox0 - P, t);
        __syncthreads();
        long long pl = p0 + pb;
        int ox = ox0 + lx, oyb = oy0 + gy * DW_R;
        if (pb < t.PB && pl < NP && ox < WO && oyb < HO) {
            float b = bias ? bias[pl % C] : 0.0f;
            float acc[DW_R];
#pragma unroll
            for (int j = 0; j < DW_R; ++j) acc[j] = b;
            const float* xs = sx + pb * plane_sz + gy * DW_R * t.pitch + lx;
            const float* ws = sw + pb * KK;
#pragma unroll
            for (int kw = 0; kw < K; ++kw) {
                float v[DW_R + K - 1];
#pragma unroll
                for (int i = 0; i < DW_R + K - 1; ++i) v[i] = xs[i * t.pitch + kw];
#pragma unroll
                for (int kh = 0; kh < K; ++kh) {
                    float wv = ws[kh * K + kw];
#pragma unroll
                    for (int j = 0; j < DW_R; ++j) acc[j] += wv * v[j + kh];
                }
            }
            float* op = out + (pl * HO + oyb) * WO + ox;
#pragma unroll
            for (int j = 0; j < DW_R; ++j)
                if (oyb + j < HO) op[(long long)j * WO] = acc[j];
        }
    }
}

// dwconv_fwd_f32: y[n][c][oy][ox] = bias[c] + sum_{kh,kw} w[c][kh][kw] * x[n][c][oy*S-P+kh][ox*S-P+kw]
// (bias may be nullptr = none; taps outside the input contribute nothing). The fast path sums
// the taps column by column (kw outer) after the bias; the general path in (kh, kw) order.
// Launch: any grid (the Rust side uses about one block per 1024 outputs), blockDim.x 256.
extern "C" __global__ void __launch_bounds__(256, 4) dwconv_fwd_f32(const float* x, const float* w, const float* bias, float* y, int N,
                                          int C, int H, int W, int K, int S, int P, int HO, int WO) {
    __shared__ float sm[DW_CAP];
    if (S == 1 && (K == 3 || K == 5 || K == 7)) {
        DwTile t;
        if (dw_tile(t, (long long)N * C, HO, WO, K, 1, K * K, blockDim.x)) {
            if (K == 7) dw_fwd_tiled<7>(x, w, bias, y, (long long)N * C, C, H, W, P, HO, WO, false, t, sm);
            else if (K == 5) dw_fwd_tiled<5>(x, w, bias, y, (long long)N * C, C, H, W, P, HO, WO, false, t, sm);
            else dw_fwd_tiled<3>(x, w, bias, y, (long long)N * C, C, H, W, P, HO, WO, false, t, sm);
            return;
        }
    }
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
// Gather form, no atomics. Stride 1, K in {3, 5, 7}: the tiled forward of gy with the flipped
// filter and padding K-1-P (gx[iy][ix] = sum_{a,b} w[K-1-a][K-1-b] * gy[iy-(K-1-P)+a][ix-(K-1-P)+b]);
// otherwise one thread per gx element. Launch: any grid, blockDim.x 256.
extern "C" __global__ void __launch_bounds__(256, 4) dwconv_bwd_input_f32(const float* gy, const float* w, float* gx, int N, int C, int H,
                                                int W, int K, int S, int P, int HO, int WO) {
    __shared__ float sm[DW_CAP];
    if (S == 1 && (K == 3 || K == 5 || K == 7)) {
        DwTile t;
        if (dw_tile(t, (long long)N * C, H, W, K, 1, K * K, blockDim.x)) {
            int Q = K - 1 - P;  // may be negative
            if (K == 7) dw_fwd_tiled<7>(gy, w, nullptr, gx, (long long)N * C, C, HO, WO, Q, H, W, true, t, sm);
            else if (K == 5) dw_fwd_tiled<5>(gy, w, nullptr, gx, (long long)N * C, C, HO, WO, Q, H, W, true, t, sm);
            else dw_fwd_tiled<3>(gy, w, nullptr, gx, (long long)N * C, C, HO, WO, Q, H, W, true, t, sm);
            return;
        }
    }
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

// One thread's DW_R outputs (rows j < JN valid; FULL: all DW_R) into its K*K tap sums.
template <int K, bool FULL>
__device__ __forceinline__ void dw_bww_acc(float* acc, const float* g, const float* xs, int pitch, int JN) {
#pragma unroll
    for (int kw = 0; kw < K; ++kw) {
        float v[DW_R + K - 1];
#pragma unroll
        for (int i = 0; i < DW_R + K - 1; ++i) v[i] = xs[i * pitch + kw];
#pragma unroll
        for (int kh = 0; kh < K; ++kh) {
            float s = acc[kh * K + kw];
#pragma unroll
            for (int j = 0; j < DW_R; ++j)
                if (FULL || j < JN) s += g[j] * v[j + kh];
            acc[kh * K + kw] = s;
        }
    }
}

// Weight gradient, stride 1: one channel per block iteration; every thread keeps the K*K tap
// sums of its outputs in registers over all tiles (PB images x TH rows x TW columns) of the
// channel, then a fixed-order block reduction. t from dw_tile(N, HO, WO, K, 1, 0, blockDim.x).
template <int K>
__device__ void dw_bww_tiled(const float* x, const float* gy, float* gw, int N, int C, int H, int W, int P, int HO,
                             int WO, const DwTile& t, float* sm) {
    const int KK = K * K;
    const int tid = threadIdx.x, NT = blockDim.x;
    const int plane_sz = t.IH * t.pitch, tpp = t.GY * t.TW, TH = t.GY * DW_R;
    const int pb = tid / tpp, rem = tid - pb * tpp, gyr = rem / t.TW, lx = rem - gyr * t.TW;
    const int lane = tid & 31, warp = tid >> 5, nwarps = NT >> 5;
    for (int c = blockIdx.x; c < C; c += gridDim.x) {
        float acc[KK];
#pragma unroll
        for (int k = 0; k < KK; ++k) acc[k] = 0.0f;
        for (long long tile = 0; tile < t.total; ++tile) {
            int tx = (int)(tile % t.tiles_x);
            long long q = tile / t.tiles_x;
            int ty = (int)(q % t.tiles_y);
            long long n0 = (q / t.tiles_y) * t.PB;
            int ox0 = tx * t.TW, oy0 = ty * TH;
            __syncthreads();  // the previous tile's readers are done
            dw_stage(sm, x, n0, N, C, c, H, W, oy0 - P, ox0 - P, t);  // image n at plane n*C + c
            __syncthreads();
            long long n = n0 + pb;
            int ox = ox0 + lx, oyb = oy0 + gyr * DW_R;
            if (pb < t.PB && n < N && ox < WO && oyb < HO) {
                const float* gp = gy + ((n * C + c) * HO + oyb) * WO + ox;
                const float* xs = sm + pb * plane_sz + gyr * DW_R * t.pitch + lx;
                int JN = HO - oyb;
                float g[DW_R];
#pragma unroll
                for (int j = 0; j < DW_R; ++j) g[j] = j < JN ? gp[(long long)j * WO] : 0.0f;
                if (JN >= DW_R) dw_bww_acc<K, true>(acc, g, xs, t.pitch, JN);
                else dw_bww_acc<K, false>(acc, g, xs, t.pitch, JN);
            }
        }
        __syncthreads();  // sm is free
#pragma unroll
        for (int k = 0; k < KK; ++k) {
            float v = acc[k];
            for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
            if (lane == 0) sm[warp * KK + k] = v;
        }
        __syncthreads();
        for (int k = tid; k < KK; k += NT) {
            float s = 0.0f;
            for (int i = 0; i < nwarps; ++i) s += sm[i * KK + k];
            gw[(long long)c * KK + k] = s;
        }
        __syncthreads();  // the readers of sm are done before the next channel stages
    }
}

// dwconv_bwd_weight_f32: gw [C, 1, K, K] (overwritten) from x [N, C, H, W] and gy [N, C, HO, WO]:
//   gw[c][kh][kw] = sum_{n,oy,ox} gy[n][c][oy][ox] * x[n][c][oy*S-P+kh][ox*S-P+kw]  (in-range taps)
// Stride 1, K in {3, 5, 7}: one block per channel (blocks loop over channels when gridDim.x < C;
// blocks beyond C idle), each input / gy element read once. Otherwise one block per (c, kh, kw)
// item (t = (c*K + kh)*K + kw, blocks loop over the C*K*K items when gridDim.x is smaller) with a
// block reduction over N*HO*WO. blockDim.x a multiple of 32 (<= 1024; the Rust side uses 256 and
// C blocks). Deterministic: the summation order depends only on the geometry and blockDim.x.
extern "C" __global__ void dwconv_bwd_weight_f32(const float* x, const float* gy, float* gw, int N, int C, int H,
                                                 int W, int K, int S, int P, int HO, int WO) {
    __shared__ float sm[DW_CAP];
    if (S == 1 && (K == 3 || K == 5 || K == 7) && (blockDim.x & 31) == 0) {
        DwTile t;
        if (dw_tile(t, N, HO, WO, K, 1, 0, blockDim.x)) {
            if (K == 7) dw_bww_tiled<7>(x, gy, gw, N, C, H, W, P, HO, WO, t, sm);
            else if (K == 5) dw_bww_tiled<5>(x, gy, gw, N, C, H, W, P, HO, WO, t, sm);
            else dw_bww_tiled<3>(x, gy, gw, N, C, H, W, P, HO, WO, t, sm);
            return;
        }
    }
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

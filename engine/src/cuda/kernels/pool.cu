// Pooling and nearest upsampling over NCHW f32 tensors, with their backward passes.
//
// Semantics follow engine/src/cpu/pool.rs and engine/src/ops/pool.rs (PyTorch floor mode):
// output o of a sliding pool covers the padded range [o*S - P, o*S - P + K) along an axis, of
// which only the part inside [0, n) is read. Max pooling treats padding as -inf (it never wins);
// average pooling divides by count_y * count_x with count = min(o*S - P + K, n + P) - (o*S - P)
// (count_include_pad=True, clipped at the padded border). Adaptive average pooling uses
// PyTorch's windows [floor(o*n/out), ceil((o+1)*n/out)) divided by their length. Nearest
// upsampling (engine/src/ops/upsample.rs) repeats each pixel SY x SX times.
//
// Launch geometry (every kernel here): grid-stride loop over the work items named at each
// kernel, blockDim.x = 256 (any value works), any gridDim (the Rust side launches
// min(ceil(work/256), 65535) blocks). Only maxpool2d_bwd_f32 uses atomics.
// Self-contained: no #include.

#define NEG_INF __int_as_float(0xff800000)

// First index of this thread and the stride of a grid-stride loop (1-D blocks, 1-D or 2-D grid).
__device__ __forceinline__ long long first_index() {
    long long block = (long long)blockIdx.y * gridDim.x + blockIdx.x;
    return block * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ long long index_stride() {
    return (long long)blockDim.x * gridDim.x * gridDim.y;
}
#define FOR_EACH(i, n) for (long long i = first_index(); i < (long long)(n); i += index_stride())

// ---------------------------------------------------------------------------------------------
// maxpool2d_fwd_f32: x [N, C, H, W] -> y [N, C, HO, WO] and argmax [N, C, HO, WO] (int): the
// flat in-plane index iy*W + ix of the maximum of each window. Window scanned row-major; the
// first element always enters, then a later one replaces it only if strictly greater (ties keep
// the first) or if it is NaN; a NaN ends the scan of its window row (as the CPU: NaN
// propagates). A window with no input element (only padding) gives -inf and argmax -1.
// One thread per output element, grid-stride over N*C*HO*WO.
extern "C" __global__ void maxpool2d_fwd_f32(const float* x, float* y, int* argmax, int N, int C, int H, int W,
                                             int KH, int KW, int SH, int SW, int PH, int PW, int HO, int WO) {
    long long L = (long long)HO * WO;
    long long total = (long long)N * C * L;
    FOR_EACH(i, total) {
        int pos = (int)(i % L);
        long long plane = i / L;  // n*C + c
        int ox = pos % WO, oy = pos / WO;
        int ys = oy * SH - PH, xs = ox * SW - PW;
        int y0 = max(ys, 0), y1 = min(ys + KH, H);
        int x0 = max(xs, 0), x1 = min(xs + KW, W);
        const float* xp = x + plane * H * W;
        float best = NEG_INF;
        int bi = -1;
        for (int iy = y0; iy < y1; ++iy) {
            for (int ix = x0; ix < x1; ++ix) {
                float v = xp[iy * W + ix];
                bool nan = v != v;
                if (v > best || nan || bi < 0) {
                    best = v;
                    bi = iy * W + ix;
                    if (nan) break;  // leaves this window row only, as the CPU's inner loop
                }
            }
        }
        y[i] = best;
        argmax[i] = bi;
    }
}

// maxpool2d_bwd_f32: gx [NC, HW] += gy [NC, HOWO] routed to argmax (from maxpool2d_fwd_f32);
// gx must be zeroed by the caller. argmax -1 (empty window) contributes nothing. Windows can
// overlap, so several outputs may hit one input: atomicAdd (summation order not fixed).
// One thread per gy element, grid-stride over NC*HOWO.
extern "C" __global__ void maxpool2d_bwd_f32(const float* gy, const int* argmax, float* gx, int NC, int HW,
                                             int HOWO) {
    long long total = (long long)NC * HOWO;
    FOR_EACH(i, total) {
        int a = argmax[i];
        if (a >= 0) atomicAdd(&gx[(i / HOWO) * HW + a], gy[i]);
    }
}

// ---------------------------------------------------------------------------------------------
// Average pooling windows along one axis.

// Sliding window of output o: reads [*start, *end), divisor factor *count (count_include_pad).
__device__ __forceinline__ void sliding_win(int o, int n, int K, int S, int P, int* start, int* end, int* count) {
    int s = o * S - P, e = s + K;
    *count = min(e, n + P) - s;
    *start = max(s, 0);
    *end = min(max(e, 0), n);
}

// Adaptive window of output o of `out` over n inputs: [floor(o*n/out), ceil((o+1)*n/out)).
__device__ __forceinline__ void adaptive_win(int o, int n, int out, int* start, int* end, int* count) {
    *start = (int)((long long)o * n / out);
    *end = (int)(((long long)(o + 1) * n + out - 1) / out);
    *count = *end - *start;
}

// Sum of the plane xp [*, W] over rows [y0, y1) x columns [x0, x1), row-major (the CPU's order).
__device__ __forceinline__ float window_sum(const float* xp, int W, int y0, int y1, int x0, int x1) {
    float s = 0.0f;
    for (int iy = y0; iy < y1; ++iy)
        for (int ix = x0; ix < x1; ++ix) s += xp[iy * W + ix];
    return s;
}

// avgpool2d_fwd_f32: x [N, C, H, W] -> y [N, C, HO, WO], y = window sum / (count_y * count_x)
// with zero padding PH/PW counted in the divisor (count_include_pad=True).
// One thread per output element, grid-stride over N*C*HO*WO.
extern "C" __global__ void avgpool2d_fwd_f32(const float* x, float* y, int N, int C, int H, int W, int KH, int KW,
                                             int SH, int SW, int PH, int PW, int HO, int WO) {
    long long L = (long long)HO * WO;
    long long total = (long long)N * C * L;
    FOR_EACH(i, total) {
        int pos = (int)(i % L);
        long long plane = i / L;
        int ox = pos % WO, oy = pos / WO;
        int y0, y1, cy, x0, x1, cx;
        sliding_win(oy, H, KH, SH, PH, &y0, &y1, &cy);
        sliding_win(ox, W, KW, SW, PW, &x0, &x1, &cx);
        y[i] = window_sum(x + plane * H * W, W, y0, y1, x0, x1) / (float)(cy * cx);
    }
}

// avgpool2d_bwd_f32: gx [N, C, H, W] (overwritten) from gy [N, C, HO, WO], the adjoint of
// avgpool2d_fwd_f32 (same parameters): gx[iy][ix] = sum over the windows containing (iy, ix)
// of gy[oy][ox] / (count_y * count_x), windows in (oy, ox) order as the CPU adds them.
// Gather form, no atomics. One thread per gx element, grid-stride over N*C*H*W.
extern "C" __global__ void avgpool2d_bwd_f32(const float* gy, float* gx, int N, int C, int H, int W, int KH,
                                             int KW, int SH, int SW, int PH, int PW, int HO, int WO) {
    long long HW = (long long)H * W;
    long long total = (long long)N * C * HW;
    FOR_EACH(i, total) {
        int pos = (int)(i % HW);
        long long plane = i / HW;
        int ix = pos % W, iy = pos / W;
        const float* gp = gy + plane * HO * WO;
        // Windows containing iy: o*SH - PH <= iy < o*SH - PH + KH.
        int tlo = iy + PH - KH + 1, tlx = ix + PW - KW + 1;
        int oy0 = tlo <= 0 ? 0 : (tlo + SH - 1) / SH, oy1 = min((iy + PH) / SH + 1, HO);
        int ox0 = tlx <= 0 ? 0 : (tlx + SW - 1) / SW, ox1 = min((ix + PW) / SW + 1, WO);
        float acc = 0.0f;
        for (int oy = oy0; oy < oy1; ++oy) {
            int y0, y1, cy;
            sliding_win(oy, H, KH, SH, PH, &y0, &y1, &cy);
            if (iy < y0 || iy >= y1) continue;
            for (int ox = ox0; ox < ox1; ++ox) {
                int x0, x1, cx;
                sliding_win(ox, W, KW, SW, PW, &x0, &x1, &cx);
                if (ix < x0 || ix >= x1) continue;
                acc += gp[oy * WO + ox] / (float)(cy * cx);
            }
        }
        gx[i] = acc;
    }
}

// adaptive_avgpool2d_fwd_f32: x [N, C, H, W] -> y [N, C, HO, WO], y = mean of the adaptive
// window (PyTorch's rule; HO = WO = 1 is the global average pool).
// One thread per output element, grid-stride over N*C*HO*WO.
extern "C" __global__ void adaptive_avgpool2d_fwd_f32(const float* x, float* y, int N, int C, int H, int W, int HO,
                                                      int WO) {
    long long L = (long long)HO * WO;
    long long total = (long long)N * C * L;
    FOR_EACH(i, total) {
        int pos = (int)(i % L);
        long long plane = i / L;
        int ox = pos % WO, oy = pos / WO;
        int y0, y1, cy, x0, x1, cx;
        adaptive_win(oy, H, HO, &y0, &y1, &cy);
        adaptive_win(ox, W, WO, &x0, &x1, &cx);
        y[i] = window_sum(x + plane * H * W, W, y0, y1, x0, x1) / (float)(cy * cx);
    }
}

// adaptive_avgpool2d_bwd_f32: gx [N, C, H, W] (overwritten) from gy [N, C, HO, WO], the adjoint
// of adaptive_avgpool2d_fwd_f32: gx[iy][ix] = sum over windows containing (iy, ix) of
// gy / (count_y * count_x), in (oy, ox) order. Gather form.
// One thread per gx element, grid-stride over N*C*H*W.
extern "C" __global__ void adaptive_avgpool2d_bwd_f32(const float* gy, float* gx, int N, int C, int H, int W,
                                                      int HO, int WO) {
    long long HW = (long long)H * W;
    long long total = (long long)N * C * HW;
    FOR_EACH(i, total) {
        int pos = (int)(i % HW);
        long long plane = i / HW;
        int ix = pos % W, iy = pos / W;
        const float* gp = gy + plane * HO * WO;
        // Windows containing i lie in [floor(i*out/n), ceil((i+1)*out/n)).
        int oy0 = (int)((long long)iy * HO / H), oy1 = min((int)(((long long)(iy + 1) * HO + H - 1) / H), HO);
        int ox0 = (int)((long long)ix * WO / W), ox1 = min((int)(((long long)(ix + 1) * WO + W - 1) / W), WO);
        float acc = 0.0f;
        for (int oy = oy0; oy < oy1; ++oy) {
            int y0, y1, cy;
            adaptive_win(oy, H, HO, &y0, &y1, &cy);
            if (iy < y0 || iy >= y1) continue;
            for (int ox = ox0; ox < ox1; ++ox) {
                int x0, x1, cx;
                adaptive_win(ox, W, WO, &x0, &x1, &cx);
                if (ix < x0 || ix >= x1) continue;
                acc += gp[oy * WO + ox] / (float)(cy * cx);
            }
        }
        gx[i] = acc;
    }
}

// ---------------------------------------------------------------------------------------------
// upsample_nearest_fwd_f32: x [N, C, H, W] -> y [N, C, H*SY, W*SX],
//   y[n][c][oy][ox] = x[n][c][oy / SY][ox / SX]   (integer scale factors >= 1).
// One thread per output element, grid-stride over N*C*H*SY*W*SX.
extern "C" __global__ void upsample_nearest_fwd_f32(const float* x, float* y, int N, int C, int H, int W, int SY,
                                                    int SX) {
    int OW = W * SX;
    long long L = (long long)H * SY * OW;
    long long total = (long long)N * C * L;
    FOR_EACH(i, total) {
        int pos = (int)(i % L);
        long long plane = i / L;
        int ox = pos % OW, oy = pos / OW;
        y[i] = x[(plane * H + oy / SY) * W + ox / SX];
    }
}

// upsample_nearest_bwd_f32: gx [N, C, H, W] (overwritten) from gy [N, C, H*SY, W*SX]:
//   gx[n][c][iy][ix] = sum_{a < SY} ( sum_{b < SX} gy[n][c][iy*SY + a][ix*SX + b] )
// (the CPU's grouping: each output row's SX copies summed, then added per row).
// One thread per gx element, grid-stride over N*C*H*W.
extern "C" __global__ void upsample_nearest_bwd_f32(const float* gy, float* gx, int N, int C, int H, int W, int SY,
                                                    int SX) {
    int OW = W * SX;
    long long HW = (long long)H * W;
    long long total = (long long)N * C * HW;
    FOR_EACH(i, total) {
        int pos = (int)(i % HW);
        long long plane = i / HW;
        int ix = pos % W, iy = pos / W;
        const float* gp = gy + plane * HW * SY * SX;
        float acc = 0.0f;
        for (int a = 0; a < SY; ++a) {
            const float* grow = gp + (long long)(iy * SY + a) * OW + ix * SX;
            float s = 0.0f;
            for (int b = 0; b < SX; ++b) s += grow[b];
            acc += s;
        }
        gx[i] = acc;
    }
}

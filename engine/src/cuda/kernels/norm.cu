// Normalisation kernels (f32): BatchNorm (training statistics, apply, running-stat update,
// backward), LayerNorm over the last dim of rows (channels-last) and over the channels of NCHW
// (ConvNeXt's channels_first LayerNorm), each with its backward.
//
// Two layouts: "nchw": channel c of image n at x[(n*C + c)*HW + s]; "rows": channels last,
// x[r*C + c] (sparse features [N_active, C], channels-last LayerNorm, BatchNorm1d on [N, C]).
//
// Semantics follow engine/src/ops/norm.rs: biased variance normalises, eps inside the square
// root (invstd = 1/sqrt(var + eps)); the running variance is updated with the unbiased variance
// (count/(count-1)); the BN backward is gx = gamma*invstd/count * (count*gy - sum_gy -
// xhat*sum_gy_xhat). Reductions accumulate in f64 (as the CPU) in a fixed order for a given
// launch geometry: warp shuffles + shared memory, no atomics, so results are reproducible.
// Statistics are two-pass (mean, then the sum of squared deviations), never E[x^2] - E[x]^2.
// gamma / beta may be nullptr (no affine: gamma = 1, beta = 0); so may the optional outputs
// named at each kernel.
//
// Launch geometry: blockDim.x = 256 for every kernel (any multiple of 32 up to 1024 works).
//  * elementwise kernels (bn_apply_*, bn_bwd_apply_*, bn_running_update_f32, ln_*_nchw_f32):
//    grid-stride over their items, any gridDim (min(ceil(items/256), 65535) blocks);
//  * per-channel block kernels (*_nchw reductions): one block per channel, blocks loop over
//    channels when gridDim.x < C (gridDim.x = min(C, 65535));
//  * column kernels (*_rows reductions, ln_bwd_params_f32): a block covers 32 channels with
//    blockDim.x/32 row lanes (thread t: channel c0 + t%32, rows t/32, t/32 + lanes, ...);
//    gridDim.x = min(ceil(C/32), 65535), blocks loop over channel tiles;
//  * warp-per-row kernels (ln_fwd_rows_f32, ln_bwd_rows_f32): one warp per row, blockDim.x/32
//    rows per block, warps loop over rows; gridDim.x = min(ceil(R*32/256), 65535).
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

__device__ __forceinline__ double warp_sum(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Sum of v over the whole block; every thread gets the result. blockDim.x must be a multiple of
// 32 (<= 1024). Contains __syncthreads: all threads of the block must call it.
__device__ double block_sum(double v) {
    __shared__ double sh[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();  // a previous call may still be reading sh
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    v = lane < nwarps ? sh[lane] : 0.0;
    return warp_sum(v);  // every warp reduces the per-warp values the same way
}

// Column layout (32 channels x blockDim.x/32 row lanes): sum of v over the row lanes of this
// thread's channel (t % 32), in lane order; every thread gets its channel's sum. Contains
// __syncthreads: all threads of the block must call it.
__device__ double lane_sum(double v) {
    __shared__ double sh[32][33];  // [row lane][channel]
    int ch = threadIdx.x & 31, ry = threadIdx.x >> 5, lanes = blockDim.x >> 5;
    __syncthreads();  // a previous call may still be reading sh
    sh[ry][ch] = v;
    __syncthreads();
    double s = 0.0;
    for (int k = 0; k < lanes; ++k) s += sh[k][ch];
    return s;
}

// 1/sqrt(var + eps) in f32, the same in every BN kernel.
__device__ __forceinline__ float inv_std(float var, float eps) { return 1.0f / sqrtf(var + eps); }

// Offset of element j (0 <= j < N*HW) of channel c in an NCHW tensor: j = n*HW + s.
__device__ __forceinline__ long long nchw_offset(long long j, int c, int C, int HW) {
    long long n = j / HW, s = j % HW;
    return (n * C + c) * HW + s;
}

// =============================================================================================
// BatchNorm

// bn_stats_nchw_f32: per-channel batch statistics of x [N, C, HW]: mean[c] and the BIASED
// variance var[c] = sum (x - mean)^2 / (N*HW). Two passes, f64. One block per channel.
extern "C" __global__ void bn_stats_nchw_f32(const float* x, float* mean, float* var, int N, int C, int HW) {
    long long count = (long long)N * HW;
    double inv_count = count > 0 ? 1.0 / (double)count : 0.0;
    for (int c = blockIdx.x; c < C; c += gridDim.x) {
        double s = 0.0;
        for (long long j = threadIdx.x; j < count; j += blockDim.x) s += (double)x[nchw_offset(j, c, C, HW)];
        double mu = block_sum(s) * inv_count;
        double q = 0.0;
        for (long long j = threadIdx.x; j < count; j += blockDim.x) {
            double d = (double)x[nchw_offset(j, c, C, HW)] - mu;
            q += d * d;
        }
        double v = block_sum(q) * inv_count;
        if (threadIdx.x == 0) {
            mean[c] = (float)mu;
            var[c] = (float)v;
        }
    }
}

// bn_stats_rows_f32: per-channel statistics of x [R, C] (channels last): mean[c] and biased
// var[c] over the R rows. Two passes, f64. Column layout (32 channels per block, see top).
extern "C" __global__ void bn_stats_rows_f32(const float* x, float* mean, float* var, int R, int C) {
    int ch = threadIdx.x & 31, ry = threadIdx.x >> 5, lanes = blockDim.x >> 5;
    double inv_count = R > 0 ? 1.0 / (double)R : 0.0;
    for (int c0 = blockIdx.x * 32; c0 < C; c0 += gridDim.x * 32) {
        int c = c0 + ch;
        bool ok = c < C;
        double s = 0.0;
        if (ok)
            for (int r = ry; r < R; r += lanes) s += (double)x[(long long)r * C + c];
        double mu = lane_sum(s) * inv_count;
        double q = 0.0;
        if (ok)
            for (int r = ry; r < R; r += lanes) {
                double d = (double)x[(long long)r * C + c] - mu;
                q += d * d;
            }
        double v = lane_sum(q) * inv_count;
        if (ok && ry == 0) {
            mean[c] = (float)mu;
            var[c] = (float)v;
        }
    }
}

// bn_apply_nchw_f32: y = (x - mean[c]) * invstd[c] * gamma[c] + beta[c], invstd = 1/sqrt(var + eps),
// over x, y [N, C, HW]. Training mode passes the batch statistics, eval mode the running ones.
// mean may be nullptr (= 0): bn_apply_nchw_f32(gy, nullptr, running_var, gamma, nullptr, eps, gx)
// is the eval-mode input gradient gx = gamma*invstd*gy. Grid-stride over N*C*HW.
extern "C" __global__ void bn_apply_nchw_f32(const float* x, const float* mean, const float* var, const float* gamma,
                                             const float* beta, float eps, float* y, int N, int C, int HW) {
    long long total = (long long)N * C * HW;
    FOR_EACH(i, total) {
        int c = (int)((i / HW) % C);
        float m = mean ? mean[c] : 0.0f;
        float g = gamma ? gamma[c] : 1.0f;
        float b = beta ? beta[c] : 0.0f;
        y[i] = (x[i] - m) * inv_std(var[c], eps) * g + b;
    }
}

// bn_apply_rows_f32: bn_apply_nchw_f32 for x, y [R, C] (channels last). Grid-stride over R*C.
extern "C" __global__ void bn_apply_rows_f32(const float* x, const float* mean, const float* var, const float* gamma,
                                             const float* beta, float eps, float* y, int R, int C) {
    long long total = (long long)R * C;
    FOR_EACH(i, total) {
        int c = (int)(i % C);
        float m = mean ? mean[c] : 0.0f;
        float g = gamma ? gamma[c] : 1.0f;
        float b = beta ? beta[c] : 0.0f;
        y[i] = (x[i] - m) * inv_std(var[c], eps) * g + b;
    }
}

// bn_running_update_f32: training-mode running statistics, in place over [C]:
//   running_mean = (1 - momentum) * running_mean + momentum * mean
//   running_var  = (1 - momentum) * running_var  + momentum * var * count / (count - 1)
// with mean / var the batch statistics (biased var) and count = N*HW (or R) values per channel
// (the CPU rejects count <= 1 in training; here count <= 1 skips the unbiasing factor). Computed
// in f64 as the CPU. Either running pointer may be nullptr. Grid-stride over C.
extern "C" __global__ void bn_running_update_f32(float* running_mean, float* running_var, const float* mean,
                                                 const float* var, float momentum, int count, int C) {
    double mom = (double)momentum;
    double unbias = count > 1 ? (double)count / ((double)count - 1.0) : 1.0;
    FOR_EACH(c, C) {
        if (running_mean) running_mean[c] = (float)((1.0 - mom) * (double)running_mean[c] + mom * (double)mean[c]);
        if (running_var)
            running_var[c] = (float)((1.0 - mom) * (double)running_var[c] + mom * (double)var[c] * unbias);
    }
}

// bn_bwd_reduce_nchw_f32: per channel of gy, x [N, C, HW]:
//   sum_gy[c] = sum gy,  sum_gy_xhat[c] = invstd[c] * sum gy * (x - mean[c])
// (= beta grad and gamma grad). f64 accumulation. One block per channel.
extern "C" __global__ void bn_bwd_reduce_nchw_f32(const float* gy, const float* x, const float* mean,
                                                  const float* var, float eps, float* sum_gy, float* sum_gy_xhat,
                                                  int N, int C, int HW) {
    long long count = (long long)N * HW;
    for (int c = blockIdx.x; c < C; c += gridDim.x) {
        double mu = (double)mean[c];
        double a = 0.0, b = 0.0;
        for (long long j = threadIdx.x; j < count; j += blockDim.x) {
            long long o = nchw_offset(j, c, C, HW);
            double g = (double)gy[o];
            a += g;
            b += g * ((double)x[o] - mu);
        }
        a = block_sum(a);
        b = block_sum(b);
        if (threadIdx.x == 0) {
            sum_gy[c] = (float)a;
            sum_gy_xhat[c] = (float)(b * (double)inv_std(var[c], eps));
        }
    }
}

// bn_bwd_reduce_rows_f32: bn_bwd_reduce_nchw_f32 for gy, x [R, C] (channels last). Column layout.
extern "C" __global__ void bn_bwd_reduce_rows_f32(const float* gy, const float* x, const float* mean,
                                                  const float* var, float eps, float* sum_gy, float* sum_gy_xhat,
                                                  int R, int C) {
    int ch = threadIdx.x & 31, ry = threadIdx.x >> 5, lanes = blockDim.x >> 5;
    for (int c0 = blockIdx.x * 32; c0 < C; c0 += gridDim.x * 32) {
        int c = c0 + ch;
        bool ok = c < C;
        double a = 0.0, b = 0.0;
        if (ok) {
            double mu = (double)mean[c];
            for (int r = ry; r < R; r += lanes) {
                long long o = (long long)r * C + c;
                double g = (double)gy[o];
                a += g;
                b += g * ((double)x[o] - mu);
            }
        }
        a = lane_sum(a);
        b = lane_sum(b);
        if (ok && ry == 0) {
            sum_gy[c] = (float)a;
            sum_gy_xhat[c] = (float)(b * (double)inv_std(var[c], eps));
        }
    }
}

// bn_bwd_apply_nchw_f32: training-mode input gradient over gy, x, gx [N, C, HW]:
//   gx = gamma*invstd/count * (count*gy - sum_gy - xhat*sum_gy_xhat),  xhat = (x - mean)*invstd,
// count = N*HW, sums from bn_bwd_reduce_nchw_f32. Grid-stride over N*C*HW.
extern "C" __global__ void bn_bwd_apply_nchw_f32(const float* gy, const float* x, const float* mean,
                                                 const float* var, const float* gamma, float eps,
                                                 const float* sum_gy, const float* sum_gy_xhat, float* gx, int N,
                                                 int C, int HW) {
    long long total = (long long)N * C * HW;
    float inv_count = 1.0f / (float)((long long)N * HW);
    FOR_EACH(i, total) {
        int c = (int)((i / HW) % C);
        float is = inv_std(var[c], eps);
        float g = gamma ? gamma[c] : 1.0f;
        float xhat = (x[i] - mean[c]) * is;
        gx[i] = g * is * (gy[i] - sum_gy[c] * inv_count - xhat * (sum_gy_xhat[c] * inv_count));
    }
}

// bn_bwd_apply_rows_f32: bn_bwd_apply_nchw_f32 for gy, x, gx [R, C] (count = R). Grid-stride over R*C.
extern "C" __global__ void bn_bwd_apply_rows_f32(const float* gy, const float* x, const float* mean,
                                                 const float* var, const float* gamma, float eps,
                                                 const float* sum_gy, const float* sum_gy_xhat, float* gx, int R,
                                                 int C) {
    long long total = (long long)R * C;
    float inv_count = 1.0f / (float)R;
    FOR_EACH(i, total) {
        int c = (int)(i % C);
        float is = inv_std(var[c], eps);
        float g = gamma ? gamma[c] : 1.0f;
        float xhat = (x[i] - mean[c]) * is;
        gx[i] = g * is * (gy[i] - sum_gy[c] * inv_count - xhat * (sum_gy_xhat[c] * inv_count));
    }
}

// =============================================================================================
// LayerNorm over the last dim of rows [R, C]

// Warp-per-row loop: `row` runs over this warp's rows (blockDim.x a multiple of 32).
#define FOR_EACH_WARP_ROW(row, R)                                                            \
    for (long long row = first_index() >> 5; row < (long long)(R); row += index_stride() >> 5)

// ln_fwd_rows_f32: per row r of x [R, C]: mu = mean, rs = 1/sqrt(biased var + eps) (two passes,
// f64), y = (x - mu) * rs * gamma + beta (gamma / beta [C] or nullptr); mean[r] = mu,
// rstd[r] = rs (either may be nullptr). One warp per row.
extern "C" __global__ void ln_fwd_rows_f32(const float* x, const float* gamma, const float* beta, float eps,
                                           float* y, float* mean, float* rstd, int R, int C) {
    int lane = threadIdx.x & 31;
    FOR_EACH_WARP_ROW(r, R) {
        const float* xr = x + r * C;
        float* yr = y + r * C;
        double s = 0.0;
        for (int c = lane; c < C; c += 32) s += (double)xr[c];
        double mu = warp_sum(s) / (double)C;
        double q = 0.0;
        for (int c = lane; c < C; c += 32) {
            double d = (double)xr[c] - mu;
            q += d * d;
        }
        double rs = 1.0 / sqrt(warp_sum(q) / (double)C + (double)eps);
        float mu_f = (float)mu, rs_f = (float)rs;
        for (int c = lane; c < C; c += 32) {
            float g = gamma ? gamma[c] : 1.0f;
            float b = beta ? beta[c] : 0.0f;
            yr[c] = (xr[c] - mu_f) * rs_f * g + b;
        }
        if (lane == 0) {
            if (mean) mean[r] = mu_f;
            if (rstd) rstd[r] = rs_f;
        }
    }
}

// ln_bwd_rows_f32: input gradient of ln_fwd_rows_f32, per row r of gy, x, gx [R, C]:
//   gx = rs * (gy*gamma - mean_c(gy*gamma) - xhat * mean_c(gy*gamma*xhat)),  xhat = (x - mu)*rs
// with mu = mean[r], rs = rstd[r] from the forward (row sums in f64). One warp per row.
extern "C" __global__ void ln_bwd_rows_f32(const float* gy, const float* x, const float* mean, const float* rstd,
                                           const float* gamma, float* gx, int R, int C) {
    int lane = threadIdx.x & 31;
    FOR_EACH_WARP_ROW(r, R) {
        const float* xr = x + r * C;
        const float* gr = gy + r * C;
        float* or_ = gx + r * C;
        float mu = mean[r], rs = rstd[r];
        double s1 = 0.0, s2 = 0.0;
        for (int c = lane; c < C; c += 32) {
            double gw = (double)gr[c] * (double)(gamma ? gamma[c] : 1.0f);
            s1 += gw;
            s2 += gw * ((double)xr[c] - (double)mu);
        }
        s1 = warp_sum(s1);
        s2 = warp_sum(s2);
        float c1 = (float)(s1 / (double)C), c2 = (float)(s2 * (double)rs / (double)C);
        for (int c = lane; c < C; c += 32) {
            float gw = gr[c] * (gamma ? gamma[c] : 1.0f);
            float xh = (xr[c] - mu) * rs;
            or_[c] = rs * (gw - c1 - xh * c2);
        }
    }
}

// ln_bwd_params_f32: parameter gradients of ln_fwd_rows_f32 over gy, x [R, C]:
//   ggamma[c] = sum_r gy * (x - mean[r]) * rstd[r],  gbeta[c] = sum_r gy
// (f64, overwritten; either output may be nullptr). Column layout (32 channels per block).
extern "C" __global__ void ln_bwd_params_f32(const float* gy, const float* x, const float* mean, const float* rstd,
                                             float* ggamma, float* gbeta, int R, int C) {
    int ch = threadIdx.x & 31, ry = threadIdx.x >> 5, lanes = blockDim.x >> 5;
    for (int c0 = blockIdx.x * 32; c0 < C; c0 += gridDim.x * 32) {
        int c = c0 + ch;
        bool ok = c < C;
        double a = 0.0, b = 0.0;
        if (ok)
            for (int r = ry; r < R; r += lanes) {
                long long o = (long long)r * C + c;
                double g = (double)gy[o];
                a += g * ((double)x[o] - (double)mean[r]) * (double)rstd[r];
                b += g;
            }
        a = lane_sum(a);
        b = lane_sum(b);
        if (ok && ry == 0) {
            if (ggamma) ggamma[c] = (float)a;
            if (gbeta) gbeta[c] = (float)b;
        }
    }
}

// =============================================================================================
// LayerNorm over the channels of NCHW (ConvNeXt's channels_first LayerNorm): each position
// p = n*HW + s of x [N, C, HW] is normalised over its C values x[(n*C + c)*HW + s];
// gamma / beta are [C]; mean / rstd are [N*HW].

// ln_fwd_nchw_f32: y = (x - mu) * rs * gamma[c] + beta[c] with mu, rs = 1/sqrt(biased var + eps)
// of the position (two passes over C, f64); mean[p] = mu, rstd[p] = rs (either may be
// nullptr). One thread per position, grid-stride over N*HW (threads of a warp read adjacent s).
extern "C" __global__ void ln_fwd_nchw_f32(const float* x, const float* gamma, const float* beta, float eps, float* y,
                                           float* mean, float* rstd, int N, int C, int HW) {
    long long P = (long long)N * HW;
    FOR_EACH(p, P) {
        long long n = p / HW, s = p % HW;
        long long base = n * C * HW + s;  // channel c at base + c*HW
        double sum = 0.0;
        for (int c = 0; c < C; ++c) sum += (double)x[base + (long long)c * HW];
        double mu = sum / (double)C;
        double q = 0.0;
        for (int c = 0; c < C; ++c) {
            double d = (double)x[base + (long long)c * HW] - mu;
            q += d * d;
        }
        double rs = 1.0 / sqrt(q / (double)C + (double)eps);
        float mu_f = (float)mu, rs_f = (float)rs;
        for (int c = 0; c < C; ++c) {
            long long o = base + (long long)c * HW;
            float g = gamma ? gamma[c] : 1.0f;
            float b = beta ? beta[c] : 0.0f;
            y[o] = (x[o] - mu_f) * rs_f * g + b;
        }
        if (mean) mean[p] = mu_f;
        if (rstd) rstd[p] = rs_f;
    }
}

// ln_bwd_nchw_f32: input gradient of ln_fwd_nchw_f32 over gy, x, gx [N, C, HW], per position:
//   gx = rs * (gy*gamma - mean_c(gy*gamma) - xhat * mean_c(gy*gamma*xhat)),  xhat = (x - mu)*rs
// with mu = mean[p], rs = rstd[p] (sums over C in f64). One thread per position, grid-stride
// over N*HW.
extern "C" __global__ void ln_bwd_nchw_f32(const float* gy, const float* x, const float* mean, const float* rstd,
                                           const float* gamma, float* gx, int N, int C, int HW) {
    long long P = (long long)N * HW;
    FOR_EACH(p, P) {
        long long n = p / HW, s = p % HW;
        long long base = n * C * HW + s;
        float mu = mean[p], rs = rstd[p];
        double s1 = 0.0, s2 = 0.0;
        for (int c = 0; c < C; ++c) {
            long long o = base + (long long)c * HW;
            double gw = (double)gy[o] * (double)(gamma ? gamma[c] : 1.0f);
            s1 += gw;
            s2 += gw * ((double)x[o] - (double)mu);
        }
        float c1 = (float)(s1 / (double)C), c2 = (float)(s2 * (double)rs / (double)C);
        for (int c = 0; c < C; ++c) {
            long long o = base + (long long)c * HW;
            float gw = gy[o] * (gamma ? gamma[c] : 1.0f);
            float xh = (x[o] - mu) * rs;
            gx[o] = rs * (gw - c1 - xh * c2);
        }
    }
}

// ln_bwd_params_nchw_f32: parameter gradients of ln_fwd_nchw_f32 over gy, x [N, C, HW]:
//   ggamma[c] = sum_{n,s} gy * (x - mean[p]) * rstd[p],  gbeta[c] = sum_{n,s} gy   (p = n*HW + s)
// (f64, overwritten; either output may be nullptr). One block per channel.
extern "C" __global__ void ln_bwd_params_nchw_f32(const float* gy, const float* x, const float* mean,
                                                  const float* rstd, float* ggamma, float* gbeta, int N, int C,
                                                  int HW) {
    long long count = (long long)N * HW;
    for (int c = blockIdx.x; c < C; c += gridDim.x) {
        double a = 0.0, b = 0.0;
        for (long long j = threadIdx.x; j < count; j += blockDim.x) {  // j = p = n*HW + s
            long long o = nchw_offset(j, c, C, HW);
            double g = (double)gy[o];
            a += g * ((double)x[o] - (double)mean[j]) * (double)rstd[j];
            b += g;
        }
        a = block_sum(a);
        b = block_sum(b);
        if (threadIdx.x == 0) {
            if (ggamma) ggamma[c] = (float)a;
            if (gbeta) gbeta[c] = (float)b;
        }
    }
}

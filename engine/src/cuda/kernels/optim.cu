// Fused optimizer updates (AdamW, LAMB), in place, one parameter tensor per launch, matching
// spark/src/optim/adamw.rs and lamb.rs.
//
// Launch geometry: 1-D grid-stride loops, blockDim.x = 256 (a multiple of 32, at most 1024),
// gridDim.x any size (lamb_stage1_f32: at most 1024, the size of its partial buffer / 2).
//
// Rounding as the CPU: the CPU forms its scalar constants in f64 and rounds them to f32 once
// (decay, lr / bc1, 1 / sqrt(bc2), ...); here they are formed the same way in f64 from the f32
// arguments, except 1 - beta, formed from the betas passed as double (1 - f32(0.999) is 1.3e-5
// off 1 - 0.999). The per-element arithmetic is f32 in the CPU's order, and since Rust never fuses
// `a*b + c` into an FMA (NVRTC runs with --fmad=true), every product that feeds an add or a
// subtraction is written __fmul_rn, which the compiler does not contract.
// Self-contained: no #include.

struct SumOp {
    template <typename T>
    __device__ __forceinline__ T operator()(T a, T b) const { return a + b; }
};

template <typename T, typename Op>
__device__ __forceinline__ T warp_reduce(T v, Op op) {
    for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Reduction of v over the whole block; every thread gets the result, in a fixed order
// (deterministic). blockDim.x must be a multiple of 32 (<= 1024). Contains __syncthreads: all
// threads of the block must call it.
template <typename T, typename Op>
__device__ T block_reduce(T v, Op op, T identity) {
    __shared__ T sh[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_reduce(v, op);
    __syncthreads();  // a previous call may still be reading sh
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    v = lane < nwarps ? sh[lane] : identity;
    return warp_reduce(v, op);
}

#define FOR_EACH(i, n)                                                                  \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (long long)(n); \
         i += (long long)blockDim.x * gridDim.x)

// The Adam moment update shared by AdamW and LAMB (CPU: gi = g * inv_clip;
// m = b1 m + (1-b1) gi; v = b2 v + (1-b2) gi gi).
__device__ __forceinline__ void update_moments(float g, float grad_scale, float b1, float one_b1, float b2,
                                               float one_b2, float& m, float& v) {
    float gi = g * grad_scale;
    m = __fmul_rn(b1, m) + __fmul_rn(one_b1, gi);
    v = __fmul_rn(b2, v) + __fmul_rn(__fmul_rn(one_b2, gi), gi);
}

// adamw_f32(p, g, m, v, n, lr, beta1, beta2, eps, weight_decay, bias_c1, bias_c2, grad_scale):
// p, g, m, v [n]; p, m, v updated in place. PyTorch AdamW as spark/src/optim/adamw.rs:
//   gi = g * grad_scale                        (grad_scale = 1 / clip, from the global norm)
//   m = b1 m + (1 - b1) gi;  v = b2 v + (1 - b2) gi^2
//   p = p * (1 - lr wd) - (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps)
// weight_decay is the parameter's effective decay (wd * wd_scale, 0 for no-decay params);
// bias_c1 = 1 - beta1^t, bias_c2 = 1 - beta2^t.
extern "C" __global__ void adamw_f32(float* p, const float* g, float* m, float* v, int n, float lr, double beta1,
                                     double beta2, float eps, float weight_decay, float bias_c1, float bias_c2,
                                     float grad_scale) {
    float b1 = (float)beta1, b2 = (float)beta2;
    float one_b1 = (float)(1.0 - beta1);
    float one_b2 = (float)(1.0 - beta2);
    float decay = (float)(1.0 - (double)lr * (double)weight_decay);
    float step = (float)((double)lr / (double)bias_c1);
    float inv_sqrt_bc2 = (float)(1.0 / sqrt((double)bias_c2));
    FOR_EACH(i, n) {
        float mi = m[i], vi = v[i];
        update_moments(g[i], grad_scale, b1, one_b1, b2, one_b2, mi, vi);
        m[i] = mi;
        v[i] = vi;
        p[i] = __fmul_rn(p[i], decay) - __fmul_rn(step, mi) / (__fmul_rn(sqrtf(vi), inv_sqrt_bc2) + eps);
    }
}

// lamb_stage1_f32(p, g, m, v, update, n, beta1, beta2, eps, weight_decay, bias_c1, bias_c2,
//                 grad_scale, partial):
// p, g, m, v, update [n]; partial [2 * gridDim.x]. LAMB pass 1 as spark/src/optim/lamb.rs:
// updates m, v like AdamW, then writes the LAMB direction
//   update = (m / bc1) / (sqrt(v) / sqrt(bc2) + eps) + wd * p
// and per-block sums partial[2b] = sum p^2, partial[2b+1] = sum update^2 (f64 inside the block,
// rounded to f32; no atomics, so deterministic). p is not modified here. With
// bias_correction off the caller passes bias_c1 = bias_c2 = 1. gridDim.x <= 1024.
extern "C" __global__ void lamb_stage1_f32(const float* p, const float* g, float* m, float* v, float* update, int n,
                                           double beta1, double beta2, float eps, float weight_decay, float bias_c1,
                                           float bias_c2, float grad_scale, float* partial) {
    float b1 = (float)beta1, b2 = (float)beta2;
    float one_b1 = (float)(1.0 - beta1);
    float one_b2 = (float)(1.0 - beta2);
    float inv_bc1 = (float)(1.0 / (double)bias_c1);
    float inv_sqrt_bc2 = (float)(1.0 / sqrt((double)bias_c2));
    double wsq = 0.0, usq = 0.0;
    FOR_EACH(i, n) {
        float mi = m[i], vi = v[i];
        update_moments(g[i], grad_scale, b1, one_b1, b2, one_b2, mi, vi);
        m[i] = mi;
        v[i] = vi;
        float w = p[i];
        float u = __fmul_rn(mi, inv_bc1) / (__fmul_rn(sqrtf(vi), inv_sqrt_bc2) + eps) + __fmul_rn(weight_decay, w);
        update[i] = u;
        wsq += (double)w * (double)w;
        usq += (double)u * (double)u;
    }
    wsq = block_reduce(wsq, SumOp(), 0.0);
    usq = block_reduce(usq, SumOp(), 0.0);
    if (threadIdx.x == 0) {
        partial[2 * blockIdx.x] = (float)wsq;
        partial[2 * blockIdx.x + 1] = (float)usq;
    }
}

// lamb_stage2_f32(p, update, n, lr, partial, nblocks, weight_decay):
// p, update [n]; partial [2 * nblocks] from lamb_stage1_f32 (nblocks = its gridDim.x).
// LAMB pass 2: p = p - (lr * r) * update, with the trust ratio of the CPU:
//   weight_decay != 0: ||p|| = sqrt(sum partial[2b]), ||u|| = sqrt(sum partial[2b+1]),
//                      r = ||p|| / ||u|| if both > 0, else 1 (no clamp);
//   weight_decay == 0: r = 1 (no trust ratio for no-decay parameters; partial is not read).
// weight_decay must be the value passed to stage 1. Every block sums the nblocks partial pairs
// itself, in the same fixed order, so all blocks use the same ratio (no host sync, deterministic).
extern "C" __global__ void lamb_stage2_f32(float* p, const float* update, int n, float lr, const float* partial,
                                           int nblocks, float weight_decay) {
    float step = lr;
    if (weight_decay != 0.0f) {  // uniform over the grid: the block reductions inside are safe
        double wsq = 0.0, usq = 0.0;
        for (int b = threadIdx.x; b < nblocks; b += blockDim.x) {
            wsq += (double)partial[2 * b];
            usq += (double)partial[2 * b + 1];
        }
        wsq = block_reduce(wsq, SumOp(), 0.0);
        usq = block_reduce(usq, SumOp(), 0.0);
        double wn = sqrt(wsq), un = sqrt(usq);
        double r = (wn > 0.0 && un > 0.0) ? wn / un : 1.0;
        step = (float)((double)lr * r);
    }
    FOR_EACH(i, n) p[i] = p[i] - __fmul_rn(step, update[i]);
}

// Row softmax / log-softmax, their backward, and cross entropy with label smoothing, over
// contiguous rows [R, C], as engine/src/ops/softmax.rs computes them in f32.
//
// Launch geometry (every kernel here): one block of 256 threads per row (blockDim.x must be a
// multiple of 32, at most 1024), gridDim.x = R or fewer (blocks stride over rows). Each block
// reads its row a few times (max, sum, write); rows are short enough to stay in L1/L2.
// Self-contained: no #include.

#define NEG_INF __int_as_float(0xff800000)

struct SumOp {
    template <typename T>
    __device__ __forceinline__ T operator()(T a, T b) const { return a + b; }
};
// f32 max as Rust's f32::max (the CPU's softmax fold): a NaN operand loses.
struct MaxOp {
    __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

template <typename T, typename Op>
__device__ __forceinline__ T warp_reduce(T v, Op op) {
    for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Reduction of v over the whole block; every thread gets the result. blockDim.x must be a
// multiple of 32 (<= 1024). Contains __syncthreads: all threads of the block must call it.
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

// Row statistics of the stable (log-)softmax: m = max_c x[c], s = sum_c exp(x[c] - m).
// Block-wide: every thread of the block must call it.
__device__ void row_max_sum(const float* xr, int C, float& m, float& s) {
    float mx = NEG_INF;
    for (int c = threadIdx.x; c < C; c += blockDim.x) mx = fmaxf(mx, xr[c]);
    mx = block_reduce(mx, MaxOp(), NEG_INF);
    float sum = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) sum += expf(xr[c] - mx);
    m = mx;
    s = block_reduce(sum, SumOp(), 0.0f);
}

// softmax_rows_f32(x, y, R, C): x, y [R, C] (may alias); y[r,c] = exp(x[r,c] - m_r) * (1 / s_r).
extern "C" __global__ void softmax_rows_f32(const float* x, float* y, int R, int C) {
    for (int r = blockIdx.x; r < R; r += gridDim.x) {
        const float* xr = x + (long long)r * C;
        float* yr = y + (long long)r * C;
        float m, s;
        row_max_sum(xr, C, m, s);
        float inv = 1.0f / s;
        for (int c = threadIdx.x; c < C; c += blockDim.x) yr[c] = expf(xr[c] - m) * inv;
    }
}

// log_softmax_rows_f32(x, y, R, C): x, y [R, C] (may alias); y[r,c] = (x[r,c] - m_r) - log(s_r)
// (the exact shift first, as the CPU).
extern "C" __global__ void log_softmax_rows_f32(const float* x, float* y, int R, int C) {
    for (int r = blockIdx.x; r < R; r += gridDim.x) {
        const float* xr = x + (long long)r * C;
        float* yr = y + (long long)r * C;
        float m, s;
        row_max_sum(xr, C, m, s);
        float ls = logf(s);
        for (int c = threadIdx.x; c < C; c += blockDim.x) yr[c] = (xr[c] - m) - ls;
    }
}

// softmax_bwd_rows_f32(y, gy, gx, R, C): y = softmax output, all [R, C];
// gx[r,c] = y[r,c] * (gy[r,c] - sum_k gy[r,k] y[r,k]).
extern "C" __global__ void softmax_bwd_rows_f32(const float* y, const float* gy, float* gx, int R, int C) {
    for (int r = blockIdx.x; r < R; r += gridDim.x) {
        long long base = (long long)r * C;
        float dot = 0.0f;
        for (int c = threadIdx.x; c < C; c += blockDim.x) dot += gy[base + c] * y[base + c];
        dot = block_reduce(dot, SumOp(), 0.0f);
        for (int c = threadIdx.x; c < C; c += blockDim.x) gx[base + c] = y[base + c] * (gy[base + c] - dot);
    }
}

// log_softmax_bwd_rows_f32(y, gy, gx, R, C): y = log-softmax output, all [R, C];
// gx[r,c] = gy[r,c] - exp(y[r,c]) * sum_k gy[r,k] (product rounded before the subtraction).
extern "C" __global__ void log_softmax_bwd_rows_f32(const float* y, const float* gy, float* gx, int R, int C) {
    for (int r = blockIdx.x; r < R; r += gridDim.x) {
        long long base = (long long)r * C;
        float sum = 0.0f;
        for (int c = threadIdx.x; c < C; c += blockDim.x) sum += gy[base + c];
        sum = block_reduce(sum, SumOp(), 0.0f);
        for (int c = threadIdx.x; c < C; c += blockDim.x)
            gx[base + c] = gy[base + c] - __fmul_rn(expf(y[base + c]), sum);
    }
}

// cross_entropy_fwd_f32(logits, labels, smoothing, loss, R, C): logits [R, C], labels [R] in
// [0, C), loss [R]. With lp = log_softmax(logits[r]) (f32, as the CPU) and eps = smoothing:
//   loss[r] = (1 - eps) * (-lp[label]) + eps * (-sum_c lp[c] / C)     (in f64, rounded to f32)
// where the smoothing term is skipped (not 0 * it) when eps = 0, as the CPU does. The caller
// takes the mean over rows. A label outside [0, C) gives a NaN loss.
extern "C" __global__ void cross_entropy_fwd_f32(const float* logits, const int* labels, float smoothing,
                                                 float* loss, int R, int C) {
    double eps = (double)smoothing;
    for (int r = blockIdx.x; r < R; r += gridDim.x) {
        const float* xr = logits + (long long)r * C;
        float m, s;
        row_max_sum(xr, C, m, s);
        float ls = logf(s);
        double smooth = 0.0;
        if (eps > 0.0) {  // uniform over the block: the block reduction inside is safe
            double acc = 0.0;
            for (int c = threadIdx.x; c < C; c += blockDim.x) acc += (double)((xr[c] - m) - ls);
            acc = block_reduce(acc, SumOp(), 0.0);
            smooth = -acc / (double)C;
        }
        if (threadIdx.x == 0) {
            int t = labels[r];
            float out;
            if (t < 0 || t >= C) {
                out = __int_as_float(0x7fc00000);  // NaN: invalid label
            } else {
                double nll = -(double)((xr[t] - m) - ls);
                out = (float)((1.0 - eps) * nll + eps * smooth);
            }
            loss[r] = out;
        }
    }
}

// cross_entropy_bwd_f32(logits, labels, smoothing, gloss, glogits, R, C): logits, glogits
// [R, C], labels, gloss [R]. glogits[r,c] = gloss[r] * (exp(lp[r,c]) - q_c), with lp the row's
// log-softmax recomputed as in the forward and q = (1 - eps) onehot(label) + eps / C, i.e.
// q_c = f32(1 - eps + eps/C) at the label and f32(eps/C) elsewhere (as the CPU).
extern "C" __global__ void cross_entropy_bwd_f32(const float* logits, const int* labels, float smoothing,
                                                 const float* gloss, float* glogits, int R, int C) {
    double eps = (double)smoothing;
    float off = (float)(eps / (double)C);
    float on = (float)(1.0 - eps + eps / (double)C);
    for (int r = blockIdx.x; r < R; r += gridDim.x) {
        const float* xr = logits + (long long)r * C;
        float* gr = glogits + (long long)r * C;
        float m, s;
        row_max_sum(xr, C, m, s);
        float ls = logf(s);
        int t = labels[r];
        float g = gloss[r];
        for (int c = threadIdx.x; c < C; c += blockDim.x) {
            float q = c == t ? on : off;
            gr[c] = g * (expf((xr[c] - m) - ls) - q);
        }
    }
}

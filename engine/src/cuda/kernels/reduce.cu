// Reductions over rows / a middle axis (sum, max) and the partial sums of squares behind the
// global gradient norm.
//
// Sums accumulate in f64 and round to f32 once, as engine/src/ops/reduce.rs (sum_row) and
// spark/src/optim/state.rs (global_grad_norm) do. Every reduction has a fixed order for a given
// launch geometry (warp shuffles + shared memory, no atomics), so results are reproducible.
// Row kernels need blockDim.x a multiple of 32 (at most 1024); the Rust side uses 256.
// Self-contained: no #include.

#define NEG_INF __int_as_float(0xff800000)

struct SumOp {
    template <typename T>
    __device__ __forceinline__ T operator()(T a, T b) const { return a + b; }
};
// Max as the CPU's fold `if b > a { b } else { a }`: a NaN after the first element is skipped.
struct MaxOp {
    __device__ __forceinline__ float operator()(float a, float b) const { return b > a ? b : a; }
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
    return warp_reduce(v, op);  // every warp reduces the per-warp values the same way
}

// sum_rows_f32(x, y, rows, cols): x [rows, cols], y [rows]; y[r] = sum_c x[r*cols + c]
// (f64 accumulation, 0 for cols = 0). One block of 256 threads per row, gridDim.x = rows (or
// fewer: blocks stride over rows). Also sums the sumsq_partial_f32 / partial buffers (rows = 1).
extern "C" __global__ void sum_rows_f32(const float* x, float* y, int rows, int cols) {
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* xr = x + (long long)r * cols;
        double acc = 0.0;
        for (int c = threadIdx.x; c < cols; c += blockDim.x) acc += (double)xr[c];
        acc = block_reduce(acc, SumOp(), 0.0);
        if (threadIdx.x == 0) y[r] = (float)acc;
    }
}

// max_rows_f32(x, y, rows, cols): x [rows, cols], y [rows]; y[r] = max_c x[r*cols + c]
// (-inf for cols = 0; the CPU rejects an empty max). Geometry as sum_rows_f32.
extern "C" __global__ void max_rows_f32(const float* x, float* y, int rows, int cols) {
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* xr = x + (long long)r * cols;
        float acc = NEG_INF;
        for (int c = threadIdx.x; c < cols; c += blockDim.x) acc = MaxOp()(acc, xr[c]);
        acc = block_reduce(acc, MaxOp(), NEG_INF);
        if (threadIdx.x == 0) y[r] = acc;
    }
}

// sum_mid_f32(x, y, outer, r, inner): x [outer, r, inner], y [outer, inner];
// y[o*inner + i] = sum_j x[(o*r + j)*inner + i] (f64 accumulation in j order, as the CPU).
// One thread per output (outer*inner of them), grid-stride, blockDim 256, any gridDim; the
// loads of a warp are contiguous in i.
extern "C" __global__ void sum_mid_f32(const float* x, float* y, int outer, int r, int inner) {
    long long total = (long long)outer * inner;
    long long stride = (long long)blockDim.x * gridDim.x;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += stride) {
        long long o = t / inner, i = t % inner;
        const float* xp = x + o * r * inner + i;
        double acc = 0.0;
        for (int j = 0; j < r; ++j) acc += (double)xp[(long long)j * inner];
        y[t] = (float)acc;
    }
}

// max_mid_f32(x, y, outer, r, inner): as sum_mid_f32 with max; the fold starts at j = 0 exactly
// as the CPU's (so NaN handling matches too); -inf when r = 0.
extern "C" __global__ void max_mid_f32(const float* x, float* y, int outer, int r, int inner) {
    long long total = (long long)outer * inner;
    long long stride = (long long)blockDim.x * gridDim.x;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += stride) {
        long long o = t / inner, i = t % inner;
        const float* xp = x + o * r * inner + i;
        float acc = r > 0 ? xp[0] : NEG_INF;
        for (int j = 1; j < r; ++j) acc = MaxOp()(acc, xp[(long long)j * inner]);
        y[t] = acc;
    }
}

// sumsq_partial_f32(x, n, partial): x [n]; block b writes partial[b] = sum of x[i]^2 over its
// grid-stride share (f64 inside the block, rounded to f32 once). Launch: gridDim.x = 1024 (fewer
// when n is small), blockDim.x = 256; partial has gridDim.x slots. Then
// sum_rows_f32(partial, out, 1, gridDim.x) gives the sum of squares. No atomics: deterministic.
extern "C" __global__ void sumsq_partial_f32(const float* x, int n, float* partial) {
    double acc = 0.0;
    long long stride = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        double v = (double)x[i];
        acc += v * v;
    }
    acc = block_reduce(acc, SumOp(), 0.0);
    if (threadIdx.x == 0) partial[blockIdx.x] = (float)acc;
}

// Row / axis indexing: index_select (gather) and its adjoint index_add (scatter-add), as
// engine/src/ops/index.rs. Indices are int32 on the device; a negative index selects zeros
// (select) or is skipped (add), so padded index lists need no special casing.
//
// Launch geometry (every kernel here): a grid-stride loop over the elements of the indexed side
// (nidx*cols, or outer*nidx*inner), blockDim.x = 256 (any value), gridDim any size; 2-D grids
// or blocks are flattened into the same loop, so every element is handled exactly once.
// The adds use atomicAdd: repeated indices add up, in an unspecified order (the CPU adds them
// sequentially, so sums of repeated indices can differ in the last bits).
// Self-contained: no #include.

// Flat id of this thread and the total thread count, over a 1-D or 2-D grid of 1-D or 2-D
// blocks: any such launch visits every element exactly once.
__device__ __forceinline__ long long first_index() {
    long long block = (long long)blockIdx.y * gridDim.x + blockIdx.x;
    return block * (blockDim.x * blockDim.y) + threadIdx.y * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ long long index_stride() {
    return (long long)blockDim.x * blockDim.y * gridDim.x * gridDim.y;
}
#define FOR_EACH(t, n) for (long long t = first_index(); t < (long long)(n); t += index_stride())

// index_select_rows_f32(x, idx, y, nidx, cols): x [rows, cols], idx [nidx], y [nidx, cols];
// y[i, c] = x[idx[i], c], or 0 when idx[i] < 0.
extern "C" __global__ void index_select_rows_f32(const float* x, const int* idx, float* y, int nidx, int cols) {
    FOR_EACH(t, (long long)nidx * cols) {
        long long i = t / cols, c = t % cols;
        int row = idx[i];
        y[t] = row < 0 ? 0.0f : x[(long long)row * cols + c];
    }
}

// index_add_rows_f32(src, idx, y, nidx, cols): src [nidx, cols], idx [nidx], y [rows, cols];
// y[idx[i], c] += src[i, c] (atomicAdd), skipping idx[i] < 0. y is accumulated into, not
// cleared: zero it first for a fresh gradient.
extern "C" __global__ void index_add_rows_f32(const float* src, const int* idx, float* y, int nidx, int cols) {
    FOR_EACH(t, (long long)nidx * cols) {
        long long i = t / cols, c = t % cols;
        int row = idx[i];
        if (row >= 0) atomicAdd(&y[(long long)row * cols + c], src[t]);
    }
}

// gather_f32(x, idx, y, outer, src_dim, nidx, inner): index_select along a middle axis.
// x [outer, src_dim, inner], idx [nidx], y [outer, nidx, inner];
// y[(o*nidx + i)*inner + j] = x[(o*src_dim + idx[i])*inner + j], or 0 when idx[i] < 0.
extern "C" __global__ void gather_f32(const float* x, const int* idx, float* y, int outer, int src_dim, int nidx,
                                      int inner) {
    FOR_EACH(t, (long long)outer * nidx * inner) {
        long long j = t % inner, oi = t / inner;
        long long i = oi % nidx, o = oi / nidx;
        int k = idx[i];
        y[t] = k < 0 ? 0.0f : x[(o * src_dim + k) * inner + j];
    }
}

// scatter_add_f32(src, idx, y, outer, src_dim, nidx, inner): the adjoint of gather_f32.
// src [outer, nidx, inner], idx [nidx], y [outer, src_dim, inner] (accumulated into);
// y[(o*src_dim + idx[i])*inner + j] += src[(o*nidx + i)*inner + j] (atomicAdd), skipping idx[i] < 0.
extern "C" __global__ void scatter_add_f32(const float* src, const int* idx, float* y, int outer, int src_dim,
                                           int nidx, int inner) {
    FOR_EACH(t, (long long)outer * nidx * inner) {
        long long j = t % inner, oi = t / inner;
        long long i = oi % nidx, o = oi / nidx;
        int k = idx[i];
        if (k >= 0) atomicAdd(&y[(o * src_dim + k) * inner + j], src[t]);
    }
}

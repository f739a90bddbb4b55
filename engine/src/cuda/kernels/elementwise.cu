// Elementwise f32 kernels: fill, unary ops and their backward, same-shape and broadcast binary
// ops, strided copy, in-place accumulation.
//
// Launch geometry (every kernel here): grid-stride loop over the n elements, blockDim.x = 256
// (any value works), gridDim any size; the Rust side launches min(ceil(n/256), 65535) blocks.
// 2-D grids / blocks are also covered: the loop flattens them.
//
// Semantics follow engine/src/ops/unary.rs and binary.rs. Rust never fuses `a*b + c` into an
// FMA while NVRTC runs with --fmad=true, so the few places where a product feeds an add use
// __fmul_rn, which the compiler does not contract: the f32 results then round like the CPU's.
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
#define FOR_EACH(i, n) for (long long i = first_index(); i < (long long)(n); i += index_stride())

// ---------------------------------------------------------------------------------------------
// fill_f32: y[i] = v for i < n.
extern "C" __global__ void fill_f32(float* y, float v, int n) {
    FOR_EACH(i, n) y[i] = v;
}

// ---------------------------------------------------------------------------------------------
// Unary forward formulas (as UnaryKind::forward).

__device__ __forceinline__ float f_relu(float x) { return fmaxf(x, 0.0f); }  // Rust max: NaN -> 0
__device__ __forceinline__ float f_relu6(float x) { return fminf(fmaxf(x, 0.0f), 6.0f); }
// Exact GELU in f64 like the CPU: 0.5 x (1 + erf(x / sqrt 2)), rounded to f32.
__device__ __forceinline__ float f_gelu(float x) {
    double xf = (double)x;
    return (float)(0.5 * xf * (1.0 + erf(xf * 0.70710678118654752440)));
}
__device__ __forceinline__ float f_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ float f_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ float f_exp(float x) { return expf(x); }
__device__ __forceinline__ float f_log(float x) { return logf(x); }
__device__ __forceinline__ float f_sqrt(float x) { return sqrtf(x); }
// 1 / sqrt(x) with IEEE division and sqrt (as the CPU), not the approximate rsqrtf.
__device__ __forceinline__ float f_rsqrt(float x) { return 1.0f / sqrtf(x); }
__device__ __forceinline__ float f_abs(float x) { return fabsf(x); }
// The CPU's neg is affine(-1, 0): x * -1 + 0, which gives +0 for both zeros; 0 - x does too.
__device__ __forceinline__ float f_neg(float x) { return 0.0f - x; }
__device__ __forceinline__ float f_sqr(float x) { return x * x; }

// unary_<op>_f32(x, y, n): y[i] = op(x[i]), x and y [n] (may alias).
#define UNARY_KERNEL(NAME, F)                                                   \
    extern "C" __global__ void NAME(const float* x, float* y, int n) {          \
        FOR_EACH(i, n) y[i] = F(x[i]);                                          \
    }

UNARY_KERNEL(unary_relu_f32, f_relu)
UNARY_KERNEL(unary_relu6_f32, f_relu6)
UNARY_KERNEL(unary_gelu_f32, f_gelu)
UNARY_KERNEL(unary_sigmoid_f32, f_sigmoid)
UNARY_KERNEL(unary_tanh_f32, f_tanh)
UNARY_KERNEL(unary_exp_f32, f_exp)
UNARY_KERNEL(unary_log_f32, f_log)
UNARY_KERNEL(unary_sqrt_f32, f_sqrt)
UNARY_KERNEL(unary_rsqrt_f32, f_rsqrt)
UNARY_KERNEL(unary_abs_f32, f_abs)
UNARY_KERNEL(unary_neg_f32, f_neg)
UNARY_KERNEL(unary_sqr_f32, f_sqr)

// affine_f32(x, y, mul, add, n): y[i] = x[i] * mul + add (two roundings, as the CPU), [n].
extern "C" __global__ void affine_f32(const float* x, float* y, float mul, float add, int n) {
    FOR_EACH(i, n) y[i] = __fmul_rn(x[i], mul) + add;
}

// ---------------------------------------------------------------------------------------------
// Unary derivatives f'(x) (as UnaryKind::derivative); the backward is gy * f'(x) in f32.

// 1 for x > 0, else 0 (0 at the kink).
__device__ __forceinline__ float d_relu(float x) { return x > 0.0f ? 1.0f : 0.0f; }
// 1 strictly inside (0, 6), else 0 (0 at both kinks).
__device__ __forceinline__ float d_relu6(float x) { return (x > 0.0f && x < 6.0f) ? 1.0f : 0.0f; }
// Phi(x) + x phi(x) in f64, rounded to f32.
__device__ __forceinline__ float d_gelu(float x) {
    double xf = (double)x;
    double cdf = 0.5 * (1.0 + erf(xf * 0.70710678118654752440));
    double pdf = exp(-0.5 * xf * xf) / sqrt(2.0 * 3.14159265358979323846);
    return (float)(cdf + xf * pdf);
}
// y (1 - y) with y = sigmoid(x) recomputed by the forward formula.
__device__ __forceinline__ float d_sigmoid(float x) {
    float y = f_sigmoid(x);
    return y * (1.0f - y);
}
// 1 - y^2 with y = tanh(x).
__device__ __forceinline__ float d_tanh(float x) {
    float y = tanhf(x);
    return 1.0f - __fmul_rn(y, y);
}

// unary_bwd_<op>_f32(x, gy, gx, n): gx[i] = gy[i] * op'(x[i]), all [n].
#define UNARY_BWD_KERNEL(NAME, D)                                                          \
    extern "C" __global__ void NAME(const float* x, const float* gy, float* gx, int n) {   \
        FOR_EACH(i, n) gx[i] = gy[i] * D(x[i]);                                            \
    }

UNARY_BWD_KERNEL(unary_bwd_relu_f32, d_relu)
UNARY_BWD_KERNEL(unary_bwd_relu6_f32, d_relu6)
UNARY_BWD_KERNEL(unary_bwd_gelu_f32, d_gelu)
UNARY_BWD_KERNEL(unary_bwd_sigmoid_f32, d_sigmoid)
UNARY_BWD_KERNEL(unary_bwd_tanh_f32, d_tanh)

// ---------------------------------------------------------------------------------------------
// Binary ops (as BinKind::apply). max / min are Rust's f32::max / min: a NaN operand loses.

__device__ __forceinline__ float b_add(float a, float b) { return a + b; }
__device__ __forceinline__ float b_sub(float a, float b) { return a - b; }
__device__ __forceinline__ float b_mul(float a, float b) { return a * b; }
__device__ __forceinline__ float b_div(float a, float b) { return a / b; }
__device__ __forceinline__ float b_max(float a, float b) { return fmaxf(a, b); }
__device__ __forceinline__ float b_min(float a, float b) { return fminf(a, b); }

// binary_<op>_f32(a, b, y, n): y[i] = a[i] op b[i], all contiguous [n] (y may alias a or b).
#define BINARY_KERNEL(NAME, F)                                                           \
    extern "C" __global__ void NAME(const float* a, const float* b, float* y, int n) {   \
        FOR_EACH(i, n) y[i] = F(a[i], b[i]);                                             \
    }

BINARY_KERNEL(binary_add_f32, b_add)
BINARY_KERNEL(binary_sub_f32, b_sub)
BINARY_KERNEL(binary_mul_f32, b_mul)
BINARY_KERNEL(binary_div_f32, b_div)
BINARY_KERNEL(binary_max_f32, b_max)
BINARY_KERNEL(binary_min_f32, b_min)

// Broadcast / strided operand description, passed by value (#[repr(C)], 26 ints, no padding).
// y is contiguous with shape dims[0..ndim] (ndim <= 6; ndim = 0 is a scalar, n = 1). Element i
// of y unravels row-major into (i_0 .. i_{ndim-1}); a is read at oa + sum_d i_d sa[d] and b at
// ob + sum_d i_d sb[d] (stride 0 = broadcast dim). Entries at d >= ndim are ignored.
struct Bcast {
    int ndim;
    int dims[6];
    int sa[6];
    int sb[6];
    int oa;
    int ob;
};

// bcast_<op>_f32(a, b, y, n, s): y[i] = a[off_a(i)] op b[off_b(i)], y contiguous [n] with
// n = prod dims. The dims are walked with constant indices (unrolled) so the struct stays in
// the parameter space.
#define BCAST_KERNEL(NAME, F)                                                                    \
    extern "C" __global__ void NAME(const float* a, const float* b, float* y, int n, Bcast s) {  \
        FOR_EACH(i, n) {                                                                         \
            long long rem = i, ia = s.oa, ib = s.ob;                                             \
            _Pragma("unroll") for (int d = 5; d >= 0; --d) {                                     \
                if (d < s.ndim) {                                                                \
                    long long k = rem % s.dims[d];                                               \
                    rem /= s.dims[d];                                                            \
                    ia += k * s.sa[d];                                                           \
                    ib += k * s.sb[d];                                                           \
                }                                                                                \
            }                                                                                    \
            y[i] = F(a[ia], b[ib]);                                                              \
        }                                                                                        \
    }

BCAST_KERNEL(bcast_add_f32, b_add)
BCAST_KERNEL(bcast_sub_f32, b_sub)
BCAST_KERNEL(bcast_mul_f32, b_mul)
BCAST_KERNEL(bcast_div_f32, b_div)
BCAST_KERNEL(bcast_max_f32, b_max)
BCAST_KERNEL(bcast_min_f32, b_min)

// A strided view: shape dims[0..ndim] (ndim <= 6), strides st, storage offset off.
struct Strided {
    int ndim;
    int dims[6];
    int st[6];
    int off;
};

// strided_copy_f32(x, y, n, s): y contiguous [n = prod dims], y[i] = x[off + sum_d i_d st[d]]
// with (i_d) the row-major unravelling of i over dims (makes a strided view contiguous).
extern "C" __global__ void strided_copy_f32(const float* x, float* y, int n, Strided s) {
    FOR_EACH(i, n) {
        long long rem = i, ix = s.off;
#pragma unroll
        for (int d = 5; d >= 0; --d) {
            if (d < s.ndim) {
                long long k = rem % s.dims[d];
                rem /= s.dims[d];
                ix += k * s.st[d];
            }
        }
        y[i] = x[ix];
    }
}

// ---------------------------------------------------------------------------------------------
// axpy_f32(y, x, a, n): y[i] += a * x[i] (product rounded first, no FMA), both [n].
extern "C" __global__ void axpy_f32(float* y, const float* x, float a, int n) {
    FOR_EACH(i, n) y[i] = y[i] + __fmul_rn(a, x[i]);
}

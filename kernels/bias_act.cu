// bias_act.cu: x = act(x (+ bias)), in place.
//
// Shapes: x [rows, width] fp16 row-major; bias [width] fp16, or null (no
// bias). act codes are
// Rust's backend::kernels::ActCode (pinned by the static_asserts below, which a
// Rust test reads back): 0 gelu (erf), 1 gelu-tanh, 2 gelu-fast, 3 relu,
// 4 tanh; 5 adds the bias only (linear layers without an activation).
// Grid: 2-D blocks of 256 threads (backend::kernels::bias_act_geometry):
// threadIdx.x strides over a row's chunks of 8 halves, threadIdx.y picks one
// of blockDim.y rows; a grid-stride loop over rows (the launcher caps the
// grid). Indices per row (one 64-bit multiply), none per element.
// Memory: 16-byte loads and stores where the width is a multiple of 8 and x
// and bias are 16-byte aligned (common.cuh); element by element otherwise.
// Precision: fp32 math (erff/tanhf, not the fast intrinsics), rounded to fp16.
// ptxas -v (CUDA 13.0, -O3, scripts/check-ptxas.sh): see the script's table; 0 spills, 0 stack.
#include "common.cuh"

struct BiasActParams {
    __half* x;
    const __half* bias;  // may be null
    int rows;
    int width;
    int act;
    int pad_;
};
BERTRT_PARAMS_SIZE(BiasActParams, 32);

enum : int { ACT_GELU = 0, ACT_GELU_TANH = 1, ACT_GELU_FAST = 2, ACT_RELU = 3, ACT_TANH = 4, ACT_NONE = 5 };
// The same numbers as Rust's ActCode: change both sides together.
static_assert(ACT_GELU == 0, "ActCode::Gelu");
static_assert(ACT_GELU_TANH == 1, "ActCode::GeluTanh");
static_assert(ACT_GELU_FAST == 2, "ActCode::GeluFast");
static_assert(ACT_RELU == 3, "ActCode::Relu");
static_assert(ACT_TANH == 4, "ActCode::Tanh");
static_assert(ACT_NONE == 5, "ActCode::BiasOnly");

template <int ACT>
__device__ __forceinline__ float activate(float x) {
    if (ACT == ACT_GELU) return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    if (ACT == ACT_GELU_TANH) return 0.5f * x * (1.0f + tanhf(0.79788456080286536f * (x + 0.044715f * x * x * x)));
    if (ACT == ACT_GELU_FAST) return 0.5f * x * (1.0f + tanhf(x * 0.7978845608f * (1.0f + 0.044715f * x * x)));
    if (ACT == ACT_RELU) return fmaxf(x, 0.0f);
    if (ACT == ACT_NONE) return x;
    return tanhf(x);
}

template <int ACT>
__device__ __forceinline__ void bias_act(const BiasActParams& p) {
    const bool vec = p.width % CHUNK == 0 && aligned16(p.x) && (!p.bias || aligned16(p.bias));
    const int chunks = (p.width + CHUNK - 1) / CHUNK;
    const int row_step = gridDim.x * blockDim.y;
    for (int r = blockIdx.x * blockDim.y + threadIdx.y; r < p.rows; r += row_step) {
        __half* row = p.x + (size_t)r * p.width;
        for (int c = threadIdx.x; c < chunks; c += blockDim.x) {
            const int c0 = c * CHUNK, n = p.width - c0;
            float v[CHUNK];
            load_chunk(row + c0, n, vec, v);
            if (p.bias) {
                float b[CHUNK];
                load_chunk(p.bias + c0, n, vec, b);
#pragma unroll
                for (int e = 0; e < CHUNK; ++e) v[e] += b[e];
            }
#pragma unroll
            for (int e = 0; e < CHUNK; ++e) v[e] = activate<ACT>(v[e]);
            store_chunk(row + c0, n, vec, v);
        }
    }
}

extern "C" __global__ void __launch_bounds__(256) BERTRT_EXPORT(bias_act_f16)(const BiasActParams p) {
    switch (p.act) {
        case ACT_GELU: bias_act<ACT_GELU>(p); break;
        case ACT_GELU_TANH: bias_act<ACT_GELU_TANH>(p); break;
        case ACT_GELU_FAST: bias_act<ACT_GELU_FAST>(p); break;
        case ACT_RELU: bias_act<ACT_RELU>(p); break;
        case ACT_TANH: bias_act<ACT_TANH>(p); break;
        case ACT_NONE: bias_act<ACT_NONE>(p); break;
        default: __trap();  // an unknown code is a launcher bug, never a silent identity
    }
}

// bias_act.cu: x = act(x + bias), in place.
//
// Shapes: x [rows, width] fp16 row-major; bias [width] fp16. act codes are
// Rust's backend::kernels::ActCode (pinned by the static_asserts below, which a
// Rust test reads back): 0 gelu (erf), 1 gelu-tanh, 2 gelu-fast, 3 relu,
// 4 tanh; 5 adds the bias only (linear layers without an activation).
// Grid: a grid-stride loop over rows*width elements (launcher caps the grid);
// block: 256 threads.
// Precision: fp32 math (erff/tanhf, not the fast intrinsics), rounded to fp16.
// ptxas -v (CUDA 13.0, -O3, scripts/check-ptxas.sh): 24 regs sm_80/86/89/90; 0 spills, 0 stack.
#include "common.cuh"

struct BiasActParams {
    __half* x;
    const __half* bias;
    int64_t n;  // rows * width
    int width;
    int act;
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
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += stride) {
        const float v = __half2float(p.x[i]) + __half2float(p.bias[i % p.width]);
        p.x[i] = __float2half(activate<ACT>(v));
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

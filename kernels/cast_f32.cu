// cast_f32.cu: out = (f32) x, for handing fp16 results (embeddings, logits) to
// the host as f32.
//
// Shapes: x [n] fp16, out [n] f32. Grid: a grid-stride loop (launcher caps the
// grid); block: 256 threads. Exact (every fp16 is an f32).
// ptxas -v (CUDA 13.0, -O3, scripts/check-ptxas.sh): 12 regs sm_80/89/90, 14 sm_86; 0 spills, 0 stack.
#include "common.cuh"

struct CastF32Params {
    const __half* x;
    float* out;
    int64_t n;
};
BERTRT_PARAMS_SIZE(CastF32Params, 24);

__device__ __forceinline__ void cast_f32(const CastF32Params& p) {
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += stride) {
        p.out[i] = __half2float(p.x[i]);
    }
}

extern "C" __global__ void __launch_bounds__(256) BERTRT_EXPORT(cast_f32_f16)(const CastF32Params p) { cast_f32(p); }

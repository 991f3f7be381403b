// cast_f32.cu: out = (f32) x, for handing fp16 results (embeddings, logits) to
// the host as f32.
//
// Shapes: x [n] fp16, out [n] f32. Grid: a grid-stride loop over chunks of 8
// halves (launcher caps the grid); block: 256 threads. Where x and out are
// 16-byte aligned each whole chunk is one 16-byte load and two 16-byte
// stores; the last partial chunk (n not a multiple of 8) and unaligned
// buffers go element by element. Exact (every fp16 is an f32).
// ptxas -v (CUDA 13.0, -O3, scripts/check-ptxas.sh): see the script's table; 0 spills, 0 stack.
#include "common.cuh"

struct CastF32Params {
    const __half* x;
    float* out;
    int64_t n;
};
BERTRT_PARAMS_SIZE(CastF32Params, 24);

__device__ __forceinline__ void cast_f32(const CastF32Params& p) {
    const bool vec = aligned16(p.x) && aligned16(p.out);
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    const int64_t chunks = (p.n + CHUNK - 1) / CHUNK;
    for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < chunks; c += stride) {
        const int64_t i0 = c * CHUNK;
        if (vec && i0 + CHUNK <= p.n) {
            float f[CHUNK];
            load8(p.x + i0, f);
            float4* o = reinterpret_cast<float4*>(p.out + i0);
            o[0] = make_float4(f[0], f[1], f[2], f[3]);
            o[1] = make_float4(f[4], f[5], f[6], f[7]);
        } else {
            for (int64_t i = i0; i < p.n && i < i0 + CHUNK; ++i) p.out[i] = __half2float(p.x[i]);
        }
    }
}

extern "C" __global__ void __launch_bounds__(256) BERTRT_EXPORT(cast_f32_f16)(const CastF32Params p) { cast_f32(p); }

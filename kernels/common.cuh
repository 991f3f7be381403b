// common.cuh: helpers shared by bertrt's kernels.
//
// Every kernel file includes this. Under nvcc it pulls in cuda_fp16.h; under
// the CPU emulation (BERTRT_EMU, from simt_emu.h, force-included by build.rs)
// the same names come from simt_emu.h.
//
// Export names: `extern "C" __global__ void BERTRT_EXPORT(<op>_f16)(const <Op>Params p)`
// is `<op>_f16` in the fatbin and `bertrt_emu_<op>_f16` in the host library,
// so the emulated symbols cannot clash with anything else linked into a binary.
#pragma once

#ifdef BERTRT_EMU
#define BERTRT_EXPORT(name) bertrt_emu_##name
#else
#include <cuda_fp16.h>
#define BERTRT_EXPORT(name) name
#endif

#include <stdint.h>

// Every kernel takes exactly one params struct by value; its Rust twin in
// src/backend/kernels.rs has the same fields, order and size (both sides
// assert the size).
#define BERTRT_PARAMS_SIZE(type, bytes) static_assert(sizeof(type) == (bytes), #type " layout changed: update src/backend/kernels.rs")

// The block's dynamic shared memory (sized by the Rust launcher), 16-byte aligned.
#ifdef BERTRT_EMU
__device__ __forceinline__ unsigned char* dynamic_smem() { return bertrt_emu_dynamic_smem(); }
#else
extern __shared__ __align__(16) unsigned char bertrt_dynamic_smem[];
__device__ __forceinline__ unsigned char* dynamic_smem() { return bertrt_dynamic_smem; }
#endif

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

// Sum over the whole block, returned to every thread. Requires blockDim.x a
// multiple of 32 (<= 1024) and blockDim.y == blockDim.z == 1; every thread of
// the block must call it (it holds two barriers).
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float partial[32];
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int nwarps = blockDim.x >> 5;
    v = warp_sum(v);
    if (lane == 0) partial[warp] = v;
    __syncthreads();  // partials visible
    // Every warp reduces the partials itself: no broadcast round trip.
    float total = lane < nwarps ? partial[lane] : 0.0f;
    total = warp_sum(total);
    __syncthreads();  // partial[] may be overwritten by the next call
    return total;
}

// LayerNorm of one row staged as fp32 in `row` (shared memory), written as fp16
// to `out`. Two passes over the staged row: mean, then sum of squared
// deviations (no E[x^2] - mean^2 cancellation). Each thread reads only the
// elements it staged itself (same strided index), so staging needs no barrier.
__device__ __forceinline__ void layernorm_row_to_f16(const float* row, int width, const __half* gamma,
                                                     const __half* beta, float eps, __half* out) {
    float sum = 0.0f;
    for (int i = threadIdx.x; i < width; i += blockDim.x) sum += row[i];
    const float mean = block_sum(sum) / width;
    float sq = 0.0f;
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        const float d = row[i] - mean;
        sq += d * d;
    }
    const float inv_std = rsqrtf(block_sum(sq) / width + eps);
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        const float y = (row[i] - mean) * inv_std * __half2float(gamma[i]) + __half2float(beta[i]);
        out[i] = __float2half(y);
    }
}

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

// ---- 16-byte vector access (the memory-bound kernels) -----------------------
// The unit is a chunk of 8 halves: one 128-bit load or store (LDG.E.128 /
// STG.E.128; scripts/check-ptxas.sh checks the SASS). A kernel takes the
// vector path only where its width is a multiple of 8 and every base pointer
// is 16-byte aligned (cudaMalloc gives 256), so every row and chunk starts
// aligned: `vec` below, decided once per launch. Otherwise the same chunks go
// element by element, the row's last chunk partial (the tail).
constexpr int CHUNK = 8;

__device__ __forceinline__ bool aligned16(const void* p) { return ((uintptr_t)p & 15u) == 0; }

__device__ __forceinline__ float half_bits_to_float(uint32_t bits) {
#ifdef BERTRT_EMU
    __half h;
    h.bits_ = (uint16_t)bits;
    return __half2float(h);
#else
    return __half2float(__ushort_as_half((unsigned short)bits));
#endif
}

__device__ __forceinline__ uint32_t float_to_half_bits(float f) {
#ifdef BERTRT_EMU
    return __float2half(f).bits_;
#else
    return __half_as_ushort(__float2half(f));
#endif
}

// f = p[0..8) as f32, one 16-byte load; p must be 16-byte aligned.
__device__ __forceinline__ void load8(const __half* p, float (&f)[CHUNK]) {
#ifdef BERTRT_EMU
    if (!aligned16(p)) __trap();  // the GPU faults on a misaligned 16-byte access
#endif
    const uint4 u = *reinterpret_cast<const uint4*>(p);
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        f[2 * i] = half_bits_to_float(w[i] & 0xffffu);
        f[2 * i + 1] = half_bits_to_float(w[i] >> 16);
    }
}

// p[0..8) = f rounded to fp16, one 16-byte store; p must be 16-byte aligned.
__device__ __forceinline__ void store8(__half* p, const float (&f)[CHUNK]) {
#ifdef BERTRT_EMU
    if (!aligned16(p)) __trap();
#endif
    uint32_t w[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) w[i] = float_to_half_bits(f[2 * i]) | (float_to_half_bits(f[2 * i + 1]) << 16);
    *reinterpret_cast<uint4*>(p) = make_uint4(w[0], w[1], w[2], w[3]);
}

// One chunk starting at p with n valid elements (n >= CHUNK on the vector
// path, which needs the full chunk): f = p[0..n) as f32, zeros beyond.
__device__ __forceinline__ void load_chunk(const __half* p, int n, bool vec, float (&f)[CHUNK]) {
    if (vec) {
        load8(p, f);
        return;
    }
#pragma unroll
    for (int e = 0; e < CHUNK; ++e) f[e] = e < n ? __half2float(p[e]) : 0.0f;
}

// p[0..n) = f[0..n) rounded to fp16.
__device__ __forceinline__ void store_chunk(__half* p, int n, bool vec, const float (&f)[CHUNK]) {
    if (vec) {
        store8(p, f);
        return;
    }
#pragma unroll
    for (int e = 0; e < CHUNK; ++e)
        if (e < n) p[e] = __float2half(f[e]);
}

// ---- LayerNorm --------------------------------------------------------------
// Both paths: fp32 statistics, two passes (mean, then the sum of squared
// deviations: no E[x^2] - mean^2 cancellation), as the CPU reference does.
// The launcher picks the path (backend::kernels::layernorm_plan): `chunks`
// 1..LN_WARP_MAX_CHUNKS is the warp path, 0 the block path.
constexpr int LN_WARP_MAX_CHUNKS = 4;  // 4 chunks x 8 x 32 lanes = width 1024

// Warp path: the row lives in registers, lane l holding chunks j*32 + l
// (j < NCH), so a warp's loads are consecutive 16-byte pieces. Elements at or
// beyond `width` hold 0 and are left out of the variance.
template <int NCH>
__device__ __forceinline__ void warp_layernorm_store(float (&v)[NCH][CHUNK], int width, bool vec, const __half* gamma,
                                                     const __half* beta, float eps, __half* out) {
    const int lane = threadIdx.x & 31;
    float sum = 0.0f;
#pragma unroll
    for (int j = 0; j < NCH; ++j)
#pragma unroll
        for (int e = 0; e < CHUNK; ++e) sum += v[j][e];
    const float mean = warp_sum(sum) / width;
    float sq = 0.0f;
#pragma unroll
    for (int j = 0; j < NCH; ++j) {
        const int c0 = (j * 32 + lane) * CHUNK;
#pragma unroll
        for (int e = 0; e < CHUNK; ++e) {
            const float d = c0 + e < width ? v[j][e] - mean : 0.0f;
            sq += d * d;
        }
    }
    const float inv_std = rsqrtf(warp_sum(sq) / width + eps);
#pragma unroll
    for (int j = 0; j < NCH; ++j) {
        const int c0 = (j * 32 + lane) * CHUNK;
        if (c0 >= width) continue;
        float g[CHUNK], b[CHUNK], y[CHUNK];
        load_chunk(gamma + c0, width - c0, vec, g);
        load_chunk(beta + c0, width - c0, vec, b);
#pragma unroll
        for (int e = 0; e < CHUNK; ++e) y[e] = (v[j][e] - mean) * inv_std * g[e] + b[e];
        store_chunk(out + c0, width - c0, vec, y);
    }
}

// Block path (width beyond the warp path): the row staged as fp32 in `row`
// (shared memory) by the caller, thread t owning chunks t, t + blockDim.x, ...
// Each thread reads only the chunks it staged itself, so staging needs no barrier.
__device__ __forceinline__ void block_layernorm_store(const float* row, int width, bool vec, const __half* gamma,
                                                      const __half* beta, float eps, __half* out) {
    const int chunks = (width + CHUNK - 1) / CHUNK;
    float sum = 0.0f;
    for (int c = threadIdx.x; c < chunks; c += blockDim.x) {
        const int c0 = c * CHUNK, n = min(CHUNK, width - c0);
        for (int e = 0; e < n; ++e) sum += row[c0 + e];
    }
    const float mean = block_sum(sum) / width;
    float sq = 0.0f;
    for (int c = threadIdx.x; c < chunks; c += blockDim.x) {
        const int c0 = c * CHUNK, n = min(CHUNK, width - c0);
        for (int e = 0; e < n; ++e) {
            const float d = row[c0 + e] - mean;
            sq += d * d;
        }
    }
    const float inv_std = rsqrtf(block_sum(sq) / width + eps);
    for (int c = threadIdx.x; c < chunks; c += blockDim.x) {
        const int c0 = c * CHUNK;
        float g[CHUNK], b[CHUNK], y[CHUNK];
        load_chunk(gamma + c0, width - c0, vec, g);
        load_chunk(beta + c0, width - c0, vec, b);
#pragma unroll
        for (int e = 0; e < CHUNK; ++e) y[e] = c0 + e < width ? (row[c0 + e] - mean) * inv_std * g[e] + b[e] : 0.0f;
        store_chunk(out + c0, width - c0, vec, y);
    }
}

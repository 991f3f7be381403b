// add_bias_residual_layernorm.cu: out = LayerNorm(x (+ bias) (+ residual)) * gamma + beta.
//
// Shapes: x, residual, out: [rows, width] fp16 row-major; bias, gamma, beta:
// [width] fp16. bias and residual may be null (absent: a plain LayerNorm
// passes neither). `out` may be `x` (in place): each thread reads and writes
// only its own chunks of its row.
// Memory: chunks of 8 halves, 16-byte loads and stores where the width is a
// multiple of 8 and the pointers are 16-byte aligned (common.cuh); indices
// per row, no 64-bit division.
// Two paths, chosen by the launcher (backend::kernels::layernorm_plan) and
// passed as `chunks`:
//   1..4: warp per row, the row in registers (chunks of 8 per lane, width <=
//         chunks*256); block of whole warps, warp w of block b on row
//         b * (blockDim.x / 32) + w; no shared memory, no barrier.
//   0:    block per row (width > 1024): grid.x = rows, the row staged as fp32
//         in dynamic shared memory (width fp32), chunks strided over the block.
// Precision: the sum, mean and variance in fp32 (two-pass), output rounded to fp16.
// ptxas -v (CUDA 13.0, -O3, scripts/check-ptxas.sh): see the script's table; 0 spills, 0 stack.
#include "common.cuh"

struct AddBiasResidualLayerNormParams {
    const __half* x;
    const __half* bias;      // may be null
    const __half* residual;  // may be null
    const __half* gamma;
    const __half* beta;
    __half* out;
    int rows;
    int width;
    float eps;
    int chunks;  // chunks of 8 per lane on the warp path; 0: block path
};
BERTRT_PARAMS_SIZE(AddBiasResidualLayerNormParams, 64);

// v = x + bias + residual for the chunk at column c0 of row `base`, zeros beyond width.
__device__ __forceinline__ void sum_chunk(const AddBiasResidualLayerNormParams& p, size_t base, int c0, bool vec,
                                          float (&v)[CHUNK]) {
    const int n = p.width - c0;
    load_chunk(p.x + base + c0, n, vec, v);
    float t[CHUNK];
    if (p.bias) {
        load_chunk(p.bias + c0, n, vec, t);
#pragma unroll
        for (int e = 0; e < CHUNK; ++e) v[e] += t[e];
    }
    if (p.residual) {
        load_chunk(p.residual + base + c0, n, vec, t);
#pragma unroll
        for (int e = 0; e < CHUNK; ++e) v[e] += t[e];
    }
}

template <int NCH>
__device__ __forceinline__ void warp_path(const AddBiasResidualLayerNormParams& p, bool vec) {
    const int r = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (r >= p.rows) return;  // the whole warp: before any shuffle
    const size_t base = (size_t)r * p.width;
    const int lane = threadIdx.x & 31;
    float v[NCH][CHUNK];
#pragma unroll
    for (int j = 0; j < NCH; ++j) {
        const int c0 = (j * 32 + lane) * CHUNK;
        if (c0 < p.width) {
            sum_chunk(p, base, c0, vec, v[j]);
        } else {
#pragma unroll
            for (int e = 0; e < CHUNK; ++e) v[j][e] = 0.0f;
        }
    }
    warp_layernorm_store<NCH>(v, p.width, vec, p.gamma, p.beta, p.eps, p.out + base);
}

__device__ __forceinline__ void block_path(const AddBiasResidualLayerNormParams& p, bool vec) {
    const int r = blockIdx.x;
    if (r >= p.rows) return;  // whole block: before any barrier
    const size_t base = (size_t)r * p.width;
    float* row = reinterpret_cast<float*>(dynamic_smem());
    const int chunks = (p.width + CHUNK - 1) / CHUNK;
    for (int c = threadIdx.x; c < chunks; c += blockDim.x) {
        const int c0 = c * CHUNK, n = min(CHUNK, p.width - c0);
        float v[CHUNK];
        sum_chunk(p, base, c0, vec, v);
        for (int e = 0; e < n; ++e) row[c0 + e] = v[e];
    }
    block_layernorm_store(row, p.width, vec, p.gamma, p.beta, p.eps, p.out + base);
}

// (256, 2): at most 128 registers; with (256) alone ptxas aims for 4 blocks
// per SM (64 registers) and spills the warp path's 4x8-float row.
extern "C" __global__ void __launch_bounds__(256, 2)
    BERTRT_EXPORT(add_bias_residual_layernorm_f16)(const AddBiasResidualLayerNormParams p) {
    const bool vec = p.width % CHUNK == 0 && aligned16(p.x) && aligned16(p.out) && aligned16(p.gamma) &&
                     aligned16(p.beta) && (!p.bias || aligned16(p.bias)) && (!p.residual || aligned16(p.residual));
    // A plan that does not cover the row is a launcher bug: trap, never a partial row.
    if (p.chunks < 0 || p.chunks > LN_WARP_MAX_CHUNKS || (p.chunks > 0 && p.chunks * CHUNK * 32 < p.width)) __trap();
    switch (p.chunks) {
        case 0: block_path(p, vec); break;
        case 1: warp_path<1>(p, vec); break;
        case 2: warp_path<2>(p, vec); break;
        case 3: warp_path<3>(p, vec); break;
        default: warp_path<4>(p, vec); break;
    }
}

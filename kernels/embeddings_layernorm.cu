// embeddings_layernorm.cu: out[t] = LayerNorm(word[ids[t]] + pos[pos_ids[t]]
// (+ type[type_ids[t]])) * gamma + beta.
//
// Shapes: word [vocab, width], pos [max_pos, width], type [type_vocab, width]
// (or null: no token-type table, e.g. models without one), gamma/beta [width],
// out [tokens, width], all fp16 row-major; ids, pos_ids, type_ids: [tokens]
// u32 (type_ids ignored when type is null).
// Ids are validated by the caller; an id out of range still traps here
// rather than reading out of bounds.
// Memory: chunks of 8 halves, 16-byte loads and stores where the width is a
// multiple of 8 and the pointers are 16-byte aligned (common.cuh).
// Paths as in add_bias_residual_layernorm.cu (`chunks` from the launcher):
// warp per token with the row in registers for width <= 1024, else block per
// token with the row staged as fp32 in dynamic shared memory (width fp32).
// Precision: the sum and LayerNorm statistics in fp32, output rounded to fp16.
// ptxas -v (CUDA 13.0, -O3, scripts/check-ptxas.sh): see the script's table; 0 spills, 0 stack.
#include "common.cuh"

struct EmbeddingsLayerNormParams {
    const __half* word;
    const __half* pos;
    const __half* type;  // may be null
    const uint32_t* ids;
    const uint32_t* pos_ids;
    const uint32_t* type_ids;  // unused when type is null
    const __half* gamma;
    const __half* beta;
    __half* out;
    int tokens;
    int width;
    uint32_t vocab;
    uint32_t max_pos;
    uint32_t type_vocab;
    float eps;
    int chunks;  // chunks of 8 per lane on the warp path; 0: block path
    int pad_;
};
BERTRT_PARAMS_SIZE(EmbeddingsLayerNormParams, 104);

// Token t's three table rows (ty null without a type table).
struct TokenRows {
    const __half* word;
    const __half* pos;
    const __half* ty;
};

__device__ __forceinline__ TokenRows token_rows(const EmbeddingsLayerNormParams& p, int t) {
    const uint32_t id = p.ids[t];
    const uint32_t pid = p.pos_ids[t];
    const uint32_t type_id = p.type ? p.type_ids[t] : 0u;
    if (id >= p.vocab || pid >= p.max_pos || (p.type && type_id >= p.type_vocab)) __trap();
    return TokenRows{p.word + (size_t)id * p.width, p.pos + (size_t)pid * p.width,
                     p.type ? p.type + (size_t)type_id * p.width : nullptr};
}

__device__ __forceinline__ void sum_chunk(const TokenRows& r, int width, int c0, bool vec, float (&v)[CHUNK]) {
    const int n = width - c0;
    float t[CHUNK];
    load_chunk(r.word + c0, n, vec, v);
    load_chunk(r.pos + c0, n, vec, t);
#pragma unroll
    for (int e = 0; e < CHUNK; ++e) v[e] += t[e];
    if (r.ty) {
        load_chunk(r.ty + c0, n, vec, t);
#pragma unroll
        for (int e = 0; e < CHUNK; ++e) v[e] += t[e];
    }
}

template <int NCH>
__device__ __forceinline__ void warp_path(const EmbeddingsLayerNormParams& p, bool vec) {
    const int t = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (t >= p.tokens) return;  // the whole warp: before any shuffle
    const TokenRows r = token_rows(p, t);
    const int lane = threadIdx.x & 31;
    float v[NCH][CHUNK];
#pragma unroll
    for (int j = 0; j < NCH; ++j) {
        const int c0 = (j * 32 + lane) * CHUNK;
        if (c0 < p.width) {
            sum_chunk(r, p.width, c0, vec, v[j]);
        } else {
#pragma unroll
            for (int e = 0; e < CHUNK; ++e) v[j][e] = 0.0f;
        }
    }
    warp_layernorm_store<NCH>(v, p.width, vec, p.gamma, p.beta, p.eps, p.out + (size_t)t * p.width);
}

__device__ __forceinline__ void block_path(const EmbeddingsLayerNormParams& p, bool vec) {
    const int t = blockIdx.x;
    if (t >= p.tokens) return;  // whole block: before any barrier
    const TokenRows r = token_rows(p, t);
    float* row = reinterpret_cast<float*>(dynamic_smem());
    const int chunks = (p.width + CHUNK - 1) / CHUNK;
    for (int c = threadIdx.x; c < chunks; c += blockDim.x) {
        const int c0 = c * CHUNK, n = min(CHUNK, p.width - c0);
        float v[CHUNK];
        sum_chunk(r, p.width, c0, vec, v);
        for (int e = 0; e < n; ++e) row[c0 + e] = v[e];
    }
    block_layernorm_store(row, p.width, vec, p.gamma, p.beta, p.eps, p.out + (size_t)t * p.width);
}

// (256, 2): at most 128 registers; with (256) alone ptxas aims for 4 blocks
// per SM (64 registers) and spills the warp path's 4x8-float row.
extern "C" __global__ void __launch_bounds__(256, 2)
    BERTRT_EXPORT(embeddings_layernorm_f16)(const EmbeddingsLayerNormParams p) {
    const bool vec = p.width % CHUNK == 0 && aligned16(p.word) && aligned16(p.pos) && (!p.type || aligned16(p.type)) &&
                     aligned16(p.gamma) && aligned16(p.beta) && aligned16(p.out);
    if (p.chunks < 0 || p.chunks > LN_WARP_MAX_CHUNKS || (p.chunks > 0 && p.chunks * CHUNK * 32 < p.width)) __trap();
    switch (p.chunks) {
        case 0: block_path(p, vec); break;
        case 1: warp_path<1>(p, vec); break;
        case 2: warp_path<2>(p, vec); break;
        case 3: warp_path<3>(p, vec); break;
        default: warp_path<4>(p, vec); break;
    }
}

// embeddings_layernorm.cu: out[t] = LayerNorm(word[ids[t]] + pos[pos_ids[t]]
// (+ type[type_ids[t]])) * gamma + beta.
//
// Shapes: word [vocab, width], pos [max_pos, width], type [type_vocab, width]
// (or null: no token-type table, e.g. models without one), gamma/beta [width],
// out [tokens, width], all fp16 row-major; ids, pos_ids, type_ids: [tokens]
// u32 (type_ids ignored when type is null).
// Ids are validated by the caller; an id out of range still traps here
// rather than reading out of bounds.
// Grid: one block per token (grid.x = tokens); block: row_block_threads(width)
// threads strided over the row. Dynamic shared memory: width fp32.
// Precision: the sum and LayerNorm statistics in fp32, output rounded to fp16.
// ptxas -v (CUDA 13.0, -O3, scripts/check-ptxas.sh): 26 regs sm_80, 30 sm_86/89, 29 sm_90; 0 spills, 0 stack.
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
};
BERTRT_PARAMS_SIZE(EmbeddingsLayerNormParams, 96);

__device__ __forceinline__ void embeddings_layernorm(const EmbeddingsLayerNormParams& p) {
    const int t = blockIdx.x;
    if (t >= p.tokens) return;  // whole block: before any barrier
    const uint32_t id = p.ids[t];
    const uint32_t pid = p.pos_ids[t];
    const uint32_t type_id = p.type ? p.type_ids[t] : 0u;
    if (id >= p.vocab || pid >= p.max_pos || (p.type && type_id >= p.type_vocab)) __trap();
    const __half* w = p.word + (size_t)id * p.width;
    const __half* ps = p.pos + (size_t)pid * p.width;
    float* row = reinterpret_cast<float*>(dynamic_smem());
    for (int i = threadIdx.x; i < p.width; i += blockDim.x) {
        float v = __half2float(w[i]) + __half2float(ps[i]);
        if (p.type) v += __half2float(p.type[(size_t)type_id * p.width + i]);
        row[i] = v;
    }
    layernorm_row_to_f16(row, p.width, p.gamma, p.beta, p.eps, p.out + (size_t)t * p.width);
}

extern "C" __global__ void __launch_bounds__(1024)
    BERTRT_EXPORT(embeddings_layernorm_f16)(const EmbeddingsLayerNormParams p) {
    embeddings_layernorm(p);
}

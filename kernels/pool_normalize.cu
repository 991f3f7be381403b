// pool_normalize.cu: one embedding per segment of rows, on the device, so
// the host reads back [n, width] instead of every token's hidden state:
//   POOL_FIRST: out[i] = x[cu[i]]                       (CLS pooling)
//   POOL_MEAN:  out[i] = mean(x[cu[i] .. cu[i + 1]])     (mean pooling)
//   POOL_EACH:  out[i] = x[i]                            (pooler output, per token)
// then, when `normalize`, out[i] /= max(||out[i]||_2, 1e-12) as
// torch.nn.functional.normalize.
//
// Shapes: x [rows, width] fp16 row-major; cu [n + 1] i32 (FIRST/MEAN, the
// packed batch's cu_seqlens; unused for EACH); out [n, width] fp32 (what the
// host wants, with no second rounding to fp16).
// Grid: one block per output row (grid.x = n); block: the launcher's
// row_block_threads(width) threads (a multiple of 32), strided over the row.
// Dynamic shared memory: width fp32 (the pooled row, kept for the normalize).
// Precision: sums and the norm in fp32. A segment outside x or empty traps.
// ptxas -v (CUDA 13.0, -O3, scripts/check-ptxas.sh): 31 regs sm_80, 36 sm_86/89, 32 sm_90; 0 spills, 0 stack.
#include "common.cuh"

#define POOL_FIRST 0
#define POOL_MEAN 1
#define POOL_EACH 2

struct PoolNormalizeParams {
    const __half* x;
    const int32_t* cu;
    float* out;
    int n;
    int rows;
    int width;
    int mode;
    int normalize;
    int _pad;
};
BERTRT_PARAMS_SIZE(PoolNormalizeParams, 48);

__device__ __forceinline__ void pool_normalize(const PoolNormalizeParams& p) {
    const int i = blockIdx.x;
    if (i >= p.n) return;
    int lo = i, hi = i + 1;
    if (p.mode != POOL_EACH) {
        lo = p.cu[i];
        hi = p.mode == POOL_FIRST ? lo + 1 : p.cu[i + 1];
    }
    if (lo < 0 || hi > p.rows || lo >= hi) __trap();
    float* row = reinterpret_cast<float*>(dynamic_smem());
    const float count = (float)(hi - lo);
    // v = the segment's pooled row; each thread owns columns c = tid + k*blockDim.
    float sq = 0.0f;
    for (int c = threadIdx.x; c < p.width; c += blockDim.x) {
        float acc = 0.0f;
        for (int r = lo; r < hi; ++r) acc += __half2float(p.x[(size_t)r * p.width + c]);
        const float v = acc / count;
        row[c] = v;
        sq += v * v;
    }
    // scale = 1 / max(||v||, 1e-12); block_sum is reached by every thread.
    const float norm = sqrtf(block_sum(sq));
    const float scale = p.normalize ? 1.0f / fmaxf(norm, 1e-12f) : 1.0f;
    float* dst = p.out + (size_t)i * p.width;
    for (int c = threadIdx.x; c < p.width; c += blockDim.x) dst[c] = row[c] * scale;
}

extern "C" __global__ void __launch_bounds__(256) BERTRT_EXPORT(pool_normalize_f16)(const PoolNormalizeParams p) {
    pool_normalize(p);
}

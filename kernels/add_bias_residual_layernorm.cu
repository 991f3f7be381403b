// add_bias_residual_layernorm.cu: out = LayerNorm(x + bias + residual) * gamma + beta.
//
// Shapes: x, residual, out: [rows, width] fp16 row-major; bias, gamma, beta:
// [width] fp16. `out` may be `x` (in place): each thread reads and writes only
// its own columns of its row.
// Grid: one block per row (grid.x = rows); block: the launcher's
// row_block_threads(width) threads (a multiple of 32), strided over the row.
// Dynamic shared memory: width fp32 (the summed row).
// Precision: the sum, mean and variance in fp32 (two-pass), output rounded to fp16.
// ptxas -v (CUDA 13.0, -O3, scripts/check-ptxas.sh): 19 regs sm_80/86/89, 21 sm_90; 0 spills, 0 stack.
#include "common.cuh"

struct AddBiasResidualLayerNormParams {
    const __half* x;
    const __half* bias;
    const __half* residual;
    const __half* gamma;
    const __half* beta;
    __half* out;
    int rows;
    int width;
    float eps;
};
BERTRT_PARAMS_SIZE(AddBiasResidualLayerNormParams, 64);

__device__ __forceinline__ void add_bias_residual_layernorm(const AddBiasResidualLayerNormParams& p) {
    const int r = blockIdx.x;
    if (r >= p.rows) return;  // whole block: before any barrier
    const size_t base = (size_t)r * p.width;
    float* row = reinterpret_cast<float*>(dynamic_smem());
    for (int i = threadIdx.x; i < p.width; i += blockDim.x) {
        row[i] = __half2float(p.x[base + i]) + __half2float(p.bias[i]) + __half2float(p.residual[base + i]);
    }
    layernorm_row_to_f16(row, p.width, p.gamma, p.beta, p.eps, p.out + base);
}

extern "C" __global__ void __launch_bounds__(1024)
    BERTRT_EXPORT(add_bias_residual_layernorm_f16)(const AddBiasResidualLayerNormParams p) {
    add_bias_residual_layernorm(p);
}

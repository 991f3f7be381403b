// gather_rows.cu: out[i] = x[row_ids[i]]: picks rows of a packed activation,
// e.g. the first token of every sequence (row_ids = cu_seqlens[..num_seqs])
// for the pooler and the classification heads.
//
// Shapes: x [rows, width] fp16, out [n, width] fp16, row_ids [n] i32.
// Grid: one block per output row (grid.x = n); block: 128 threads strided
// over the row, 16 bytes (8 halves) at a time where the width is a multiple
// of 8 and x and out are 16-byte aligned, else one half at a time. No
// arithmetic. A row id out of range traps.
// ptxas -v (CUDA 13.0, -O3, scripts/check-ptxas.sh): see the script's table; 0 spills, 0 stack.
#include "common.cuh"

struct GatherRowsParams {
    const __half* x;
    const int32_t* row_ids;
    __half* out;
    int n;
    int rows;
    int width;
};
BERTRT_PARAMS_SIZE(GatherRowsParams, 40);

__device__ __forceinline__ void gather_rows(const GatherRowsParams& p) {
    const int i = blockIdx.x;
    if (i >= p.n) return;
    const int r = p.row_ids[i];
    if (r < 0 || r >= p.rows) __trap();
    const __half* src = p.x + (size_t)r * p.width;
    __half* dst = p.out + (size_t)i * p.width;
    if (p.width % CHUNK == 0 && aligned16(p.x) && aligned16(p.out)) {
        const uint4* s4 = reinterpret_cast<const uint4*>(src);
        uint4* d4 = reinterpret_cast<uint4*>(dst);
        for (int c = threadIdx.x; c < p.width / CHUNK; c += blockDim.x) d4[c] = s4[c];
    } else {
        for (int c = threadIdx.x; c < p.width; c += blockDim.x) dst[c] = src[c];
    }
}

extern "C" __global__ void __launch_bounds__(128) BERTRT_EXPORT(gather_rows_f16)(const GatherRowsParams p) {
    gather_rows(p);
}

// attention.cu: multi-head self-attention over packed sequences,
// O = softmax(Q K^T * scale) V, per sequence and head, no mask needed.
//
// Shapes: qkv [T, 3H] fp16 row-major, each row q | k | v with H = heads *
// head_dim and head h at columns h*head_dim.. of each third; cu_seqlens
// [num_seqs + 1] i32 (sequence s owns rows cu_seqlens[s]..cu_seqlens[s+1]);
// out [T, H] fp16. head_dim is a runtime value, 1..=ATTN_MAX_HEAD_DIM.
//
// Grid: (num_seqs, heads, ceil(max_len / ATTN_ROWS)); a block takes ATTN_ROWS
// query rows of one (sequence, head) and streams the sequence's keys through
// shared memory in tiles of ATTN_KEYS with an online (flash-style) softmax.
// Blocks past the end of a shorter sequence exit at once. Block: ATTN_THREADS.
//
// Shared memory (dynamic, sized by the launcher, attention_smem_bytes in
// src/backend/kernels.rs), stated once:
//   q_s     [ATTN_ROWS][ld] fp16     the block's queries
//   k_s     [ATTN_KEYS][ld] fp16     current key tile
//   v_s     [ATTN_KEYS][ld] fp16     current value tile
//   s_s     [ATTN_ROWS][ATTN_KEYS + 1] fp32   scores, then probabilities
//   l_s, alpha_s [ATTN_ROWS] fp32             final row sum, per-tile rescale
// ld = head_dim rounded up to even, + 2 (an odd number of 32-bit words, so the
// S = QK^T loop, where a warp reads 32 different key rows, has no bank conflicts).
// head_dim 64: 29.0 KiB; head_dim 128: 49.0 KiB (over 48 KiB: the CUDA launcher
// must raise CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES).
//
// The running max m and sum l live in registers: the ATTN_THREADS_PER_ROW
// lanes of a row reduce with xor shuffles, so each holds the same m and l and
// no lane reads a shared value another lane of its row writes in the same
// phase (a shared m, read by every lane and written by one with only a
// shuffle between, is a hazard racecheck reports).
//
// Precision: S, P, the running statistics and O accumulate in fp32; P is not
// rounded to fp16; O is rounded to fp16 once at the end.
//
// Scalar fp32 FMAs from shared memory, no tensor cores: the fallback for head
// sizes without an attention_tc.cu instance (32, 64, 128 run there).
// ptxas -v (CUDA 13.0, -O3, scripts/check-ptxas.sh): 122 regs sm_80/86/89, 124 sm_90; 0 spills, 0 stack.
// __launch_bounds__(ATTN_THREADS, 4): with the plain bound ptxas picked 64
// registers on sm_80/86/89 and spilled 4 bytes (o[] is 32 fp32); asking for
// 4 resident blocks caps it at 128 and removes the spill.
#include "common.cuh"

#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif

constexpr int ATTN_ROWS = 32;  // query rows per block (Br)
constexpr int ATTN_KEYS = 64;  // keys per shared-memory tile (Bc)
constexpr int ATTN_THREADS = 128;
constexpr int ATTN_MAX_HEAD_DIM = 128;
constexpr int ATTN_S_LD = ATTN_KEYS + 1;
constexpr int ATTN_THREADS_PER_ROW = ATTN_THREADS / ATTN_ROWS;  // softmax: 4 lanes per row
// Output elements (row, dim) each thread accumulates in registers.
constexpr int ATTN_O_PER_THREAD = ATTN_ROWS * ATTN_MAX_HEAD_DIM / ATTN_THREADS;
static_assert(ATTN_THREADS % ATTN_ROWS == 0 && 32 % ATTN_THREADS_PER_ROW == 0, "softmax row groups must tile warps");

struct AttentionParams {
    const __half* qkv;
    const int32_t* cu_seqlens;
    __half* out;
    int num_seqs;
    int heads;
    int head_dim;
    int ld;  // shared-memory row stride in halves (see above)
    float scale;
};
BERTRT_PARAMS_SIZE(AttentionParams, 48);

__device__ __forceinline__ void attention(const AttentionParams& p) {
    const int seq = blockIdx.x;
    const int head = blockIdx.y;
    const int row0 = blockIdx.z * ATTN_ROWS;
    const int start = p.cu_seqlens[seq];
    const int len = p.cu_seqlens[seq + 1] - start;
    if (row0 >= len) return;  // whole block, before any barrier
    const int d = p.head_dim;
    const int ld = p.ld;
    if (blockDim.x != ATTN_THREADS || d < 1 || d > ATTN_MAX_HEAD_DIM || ld < d || (ld & 1)) __trap();

    const int H = p.heads * d;
    const size_t qkv_ld = (size_t)3 * H;
    const __half* q_g = p.qkv + (size_t)start * qkv_ld + (size_t)head * d;
    const __half* k_g = q_g + H;
    const __half* v_g = q_g + 2 * H;
    const int tid = threadIdx.x;
    const __half zero = __float2half(0.0f);

    __half* q_s = reinterpret_cast<__half*>(dynamic_smem());
    __half* k_s = q_s + ATTN_ROWS * ld;
    __half* v_s = k_s + ATTN_KEYS * ld;
    float* s_s = reinterpret_cast<float*>(v_s + ATTN_KEYS * ld);  // ld even: 4-byte aligned
    float* l_s = s_s + ATTN_ROWS * ATTN_S_LD;
    float* alpha_s = l_s + ATTN_ROWS;

    // Q_i: this block's query rows; rows past the sequence end are zeros (their
    // outputs are computed and dropped).
    for (int e = tid; e < ATTN_ROWS * d; e += ATTN_THREADS) {
        const int i = e / d, c = e % d;
        q_s[i * ld + c] = row0 + i < len ? q_g[(size_t)(row0 + i) * qkv_ld + c] : zero;
    }
    // Row statistics of this thread's softmax row (tid / ATTN_THREADS_PER_ROW),
    // equal in all lanes of the row.
    float m_run = -INFINITY;  // m_0 = -inf
    float l_run = 0.0f;       // l_0 = 0
    float o[ATTN_O_PER_THREAD];
#pragma unroll
    for (int k = 0; k < ATTN_O_PER_THREAD; ++k) o[k] = 0.0f;  // O_0 = 0

    for (int kt = 0; kt < len; kt += ATTN_KEYS) {
        const int keys = min(ATTN_KEYS, len - kt);
        // K_j, V_j: the next key/value tile; rows past the end are zeros.
        for (int e = tid; e < ATTN_KEYS * d; e += ATTN_THREADS) {
            const int j = e / d, c = e % d;
            const bool valid = j < keys;
            k_s[j * ld + c] = valid ? k_g[(size_t)(kt + j) * qkv_ld + c] : zero;
            v_s[j * ld + c] = valid ? v_g[(size_t)(kt + j) * qkv_ld + c] : zero;
        }
        __syncthreads();  // K_j, V_j (and Q on the first tile) visible to all

        // S = Q K_j^T * scale; keys past the end: S = -inf.
        for (int e = tid; e < ATTN_ROWS * ATTN_KEYS; e += ATTN_THREADS) {
            const int i = e / ATTN_KEYS, j = e % ATTN_KEYS;
            float acc = 0.0f;
            for (int c = 0; c < d; ++c) acc += __half2float(q_s[i * ld + c]) * __half2float(k_s[j * ld + c]);
            s_s[i * ATTN_S_LD + j] = j < keys ? acc * p.scale : -INFINITY;
        }
        __syncthreads();  // S complete

        // Online softmax, ATTN_THREADS_PER_ROW adjacent lanes per row:
        //   m_new = max(m, rowmax(S)),  P = exp(S - m_new),
        //   alpha = exp(m - m_new),     l = alpha * l + rowsum(P).
        {
            const int i = tid / ATTN_THREADS_PER_ROW;
            const int sub = tid % ATTN_THREADS_PER_ROW;
            float* s_row = s_s + i * ATTN_S_LD;
            const float m_old = m_run;
            float mx = -INFINITY;
            for (int j = sub; j < ATTN_KEYS; j += ATTN_THREADS_PER_ROW) mx = fmaxf(mx, s_row[j]);
#pragma unroll
            for (int off = ATTN_THREADS_PER_ROW / 2; off > 0; off >>= 1)
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
            const float m_new = fmaxf(m_old, mx);  // finite: every tile has a valid key
            float sum = 0.0f;
            for (int j = sub; j < ATTN_KEYS; j += ATTN_THREADS_PER_ROW) {
                const float pj = expf(s_row[j] - m_new);  // exp(-inf) = 0 for masked keys
                s_row[j] = pj;
                sum += pj;
            }
#pragma unroll
            for (int off = ATTN_THREADS_PER_ROW / 2; off > 0; off >>= 1)
                sum += __shfl_xor_sync(0xffffffffu, sum, off);
            const float alpha = expf(m_old - m_new);  // m_old = -inf on the first tile: 0
            m_run = m_new;
            l_run = alpha * l_run + sum;
            if (sub == 0) alpha_s[i] = alpha;
        }
        __syncthreads();  // P and alpha visible

        // O = alpha * O + P V_j; element k of this thread is (row e / d, dim e % d).
#pragma unroll
        for (int k = 0; k < ATTN_O_PER_THREAD; ++k) {
            const int e = tid + k * ATTN_THREADS;
            if (e < ATTN_ROWS * d) {
                const int i = e / d, c = e % d;
                const float* p_row = s_s + i * ATTN_S_LD;
                float acc = o[k] * alpha_s[i];
                for (int j = 0; j < keys; ++j) acc += p_row[j] * __half2float(v_s[j * ld + c]);
                o[k] = acc;
            }
        }
        __syncthreads();  // done with K_j, V_j, P before the next tile overwrites them
    }

    // O = O / l, rows inside the sequence only; l goes through shared memory
    // because a thread's output elements belong to other rows than its softmax row.
    if (tid % ATTN_THREADS_PER_ROW == 0) l_s[tid / ATTN_THREADS_PER_ROW] = l_run;
    __syncthreads();
    const size_t out_ld = (size_t)H;
#pragma unroll
    for (int k = 0; k < ATTN_O_PER_THREAD; ++k) {
        const int e = tid + k * ATTN_THREADS;
        if (e < ATTN_ROWS * d) {
            const int i = e / d, c = e % d;
            if (row0 + i < len) {
                p.out[(size_t)(start + row0 + i) * out_ld + (size_t)head * d + c] = __float2half(o[k] / l_s[i]);
            }
        }
    }
}

extern "C" __global__ void __launch_bounds__(ATTN_THREADS, 4) BERTRT_EXPORT(attention_f16)(const AttentionParams p) {
    attention(p);
}

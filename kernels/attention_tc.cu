// attention_tc.cu: multi-head self-attention over packed sequences on tensor
// cores, flash-attention-2 style: O = softmax(Q K^T * scale) V per sequence
// and head. Same inputs and output as attention.cu (qkv [T, 3H] rows q | k | v,
// cu_seqlens [num_seqs + 1], out [T, H]); head_dim D is a template parameter
// (32, 64, 128). attention.cu stays the kernel for every other head size.
//
// Work split (docs/perf/attention.md): the host lists the query tiles, 16
// rows of one sequence each, sequence by sequence ("tiles": [num_tiles] pairs
// (seq, first row)). Warp w of block b takes tile b * WARPS + w of head
// blockIdx.y, so no warp runs rows of nothing but padding (at most 15 padded
// rows per (sequence, head)). A block whose WARPS tiles all lie in one
// sequence ("shared" block: most of a long sequence's) streams each K/V tile
// once for all its warps, every thread copying a share, with __syncthreads.
// Any other block (tiles of several sequences, or past the end of the list)
// runs its warps independently, each streaming its own sequence's K/V with
// only __syncwarp, so a warp of a short sequence never waits for another.
//
// Per warp (16 query rows):
//   Q: 16 x D, cp.async to shared memory, then ldmatrix into registers once.
//   For each tile of TC_KEYS keys (K, V double-buffered in shared memory,
//   16-byte cp.async copies; the next tile is in flight while this one runs):
//     S = Q K^T         mma m16n8k16, K through ldmatrix (K rows are B's columns)
//     online softmax    fp32, in the scaled log2 domain: s * scale * log2(e)
//     P = fp16(exp2(s - m))   stays in registers: S's accumulator layout is
//                       the A-operand layout of the next mma
//     O = alpha O + P V mma m16n8k16, V through ldmatrix.trans
//   O / l, rounded to fp16. l sums the fp16-rounded P that multiplied V, so
//   each output row stays a convex combination of V rows.
//
// Shared memory (dynamic; attention_tc_smem_bytes in
// src/backend/kernels/tc.rs): a region per warp, stages 0 and 1, each K then
// V, each [TC_KEYS][D + 8] fp16. The +8 halves (16 bytes) of padding put the 8
// rows an ldmatrix reads in 8 different bank groups. An independent warp
// stages its Q in its stage 1's K buffer, free until tile 1 is prefetched. A
// shared block streams K/V through warp 0's region and stages warp w's Q at
// row 16w of warp 1's.
#include "common.cuh"
#include "mma.cuh"

#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif

constexpr int TC_ROWS = 16;  // query rows per warp: mma's M
constexpr int TC_KEYS = 32;  // keys per K/V tile
// Warps per block: 4, or 2 for head_dim 128 so that its 68 KiB of shared
// memory fits the 99 KiB of sm_86/sm_89.
__host__ __device__ constexpr int tc_warps(int d) { return d > 64 ? 2 : 4; }
__host__ __device__ constexpr int tc_ld(int d) { return d + 8; }

struct AttentionTcParams {
    const __half* qkv;
    const int32_t* cu_seqlens;
    const int32_t* tiles;  // [num_tiles][2]: sequence, first query row in it
    __half* out;
    int num_tiles;
    int heads;
    int head_dim;      // must equal the instance's D
    float scale_log2;  // log2(e) / sqrt(head_dim)
};
BERTRT_PARAMS_SIZE(AttentionTcParams, 48);

// Rows [0, rows) of a [rows][D] slice at `src` (row stride src_ld) into
// shared memory with stride D + 8, 16 bytes per cp.async, shared out among
// `threads` threads (this one is number `me`); rows >= valid are zero-filled
// (never read from global memory: they may be past the buffer).
template <int D>
__device__ __forceinline__ void stage_rows(__half* dst, const __half* src, size_t src_ld, int valid, int rows,
                                           int me, int threads) {
    constexpr int CHUNKS = D / 8;  // 16-byte chunks per row
    for (int c = me; c < rows * CHUNKS; c += threads) {
        const int r = c / CHUNKS, col = (c % CHUNKS) * 8;
        __half* d = dst + r * tc_ld(D) + col;
        if (r < valid) {
            cp_async_16(d, src + (size_t)r * src_ld + col);
        } else {
            *reinterpret_cast<uint4*>(d) = make_uint4(0u, 0u, 0u, 0u);
        }
    }
}

template <int D>
__device__ __forceinline__ void attention_tc(const AttentionTcParams& p) {
    static_assert(D % 16 == 0 && D <= 128, "head_dim: a multiple of 16, at most 128");
    constexpr int WARPS = tc_warps(D);
    constexpr int LD = tc_ld(D);
    constexpr int NB_S = TC_KEYS / 8;  // 8-key column blocks of S
    constexpr int NB_O = D / 8;        // 8-dim column blocks of O
    constexpr int KS_QK = D / 16;      // k-steps of Q K^T
    constexpr int KS_PV = TC_KEYS / 16;
    constexpr int STAGE = 2 * TC_KEYS * LD;  // halves: K then V
    if (blockDim.x != 32 * WARPS || p.head_dim != D) __trap();

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int first = blockIdx.x * WARPS, last = first + WARPS - 1;
    // Block-uniform: every thread reads the same two entries.
    const bool shared = last < p.num_tiles && p.tiles[2 * first] == p.tiles[2 * last];
    const int tile = first + warp;
    if (tile >= p.num_tiles) return;  // whole warp, of an independent block (no block barrier)
    const int head = blockIdx.y;
    const int seq = p.tiles[2 * tile], row0 = p.tiles[2 * tile + 1];
    const int start = p.cu_seqlens[seq];
    const int len = p.cu_seqlens[seq + 1] - start;
    if (row0 < 0 || row0 >= len) __trap();

    const int H = p.heads * D;
    const size_t qkv_ld = (size_t)3 * H;
    const __half* q_g = p.qkv + (size_t)start * qkv_ld + (size_t)head * D;
    const __half* k_g = q_g + H;
    const __half* v_g = q_g + 2 * H;
    __half* smem = reinterpret_cast<__half*>(dynamic_smem());
    // K/V stages, the Q buffer, and who copies K/V: the block or this warp.
    __half* stages = smem + (size_t)(shared ? 0 : warp) * 2 * STAGE;
    __half* q_s = shared ? smem + 2 * STAGE + warp * TC_ROWS * LD : stages + STAGE;
    const int kv_me = shared ? (int)threadIdx.x : lane;
    const int kv_threads = shared ? 32 * WARPS : 32;

    const int n_tiles = (len + TC_KEYS - 1) / TC_KEYS;
    // Group 0: Q. Group 1: K/V tile 0 into stage 0.
    stage_rows<D>(q_s, q_g + (size_t)row0 * qkv_ld, qkv_ld, min(TC_ROWS, len - row0), TC_ROWS, lane, 32);
    cp_async_commit();
    stage_rows<D>(stages, k_g, qkv_ld, min(TC_KEYS, len), TC_KEYS, kv_me, kv_threads);
    stage_rows<D>(stages + TC_KEYS * LD, v_g, qkv_ld, min(TC_KEYS, len), TC_KEYS, kv_me, kv_threads);
    cp_async_commit();
    cp_async_wait<1>();
    __syncwarp();  // every lane's Q chunks visible

    // Q as A operands: matrices (rows 0-7 | 8-15) x (dims +0 | +8) of each k-step.
    uint32_t q_frag[KS_QK][4];
#pragma unroll
    for (int kk = 0; kk < KS_QK; ++kk)
        ldmatrix<4, false>(q_frag[kk], q_s + (lane % 16) * LD + kk * 16 + (lane / 16) * 8);
    __syncwarp();  // Q read by every lane before tile 1 overwrites it (independent warps)

    const int g = lane / 4, t = lane % 4;  // this lane's rows g, g + 8; columns 2t, 2t + 1
    float o[NB_O][4];
#pragma unroll
    for (int nd = 0; nd < NB_O; ++nd) o[nd][0] = o[nd][1] = o[nd][2] = o[nd][3] = 0.0f;
    float m_run[2] = {-INFINITY, -INFINITY};  // running max of rows g, g + 8 (scaled log2 domain)
    float l_run[2] = {0.0f, 0.0f};            // this lane's part of the running row sums

    for (int j = 0; j < n_tiles; ++j) {
        const int kt = j * TC_KEYS;
        if (j + 1 < n_tiles) {
            __half* next = stages + ((j + 1) & 1) * STAGE;
            const int valid = min(TC_KEYS, len - kt - TC_KEYS);
            stage_rows<D>(next, k_g + (size_t)(kt + TC_KEYS) * qkv_ld, qkv_ld, valid, TC_KEYS, kv_me, kv_threads);
            stage_rows<D>(next + TC_KEYS * LD, v_g + (size_t)(kt + TC_KEYS) * qkv_ld, qkv_ld, valid, TC_KEYS, kv_me,
                          kv_threads);
        }
        cp_async_commit();  // possibly empty: keeps "all but the newest group" = tile j
        cp_async_wait<1>();
        // Tile j from every copying thread visible.
        if (shared) {
            __syncthreads();
        } else {
            __syncwarp();
        }
        const __half* k_s = stages + (j & 1) * STAGE;
        const __half* v_s = k_s + TC_KEYS * LD;

        // S = Q K^T. One ldmatrix.x4 gives B for two 8-key blocks: matrices
        // (keys +0 | +8) x (dims +0 | +8).
        float s[NB_S][4];
#pragma unroll
        for (int nb = 0; nb < NB_S; ++nb) s[nb][0] = s[nb][1] = s[nb][2] = s[nb][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < KS_QK; ++kk) {
#pragma unroll
            for (int nb = 0; nb < NB_S; nb += 2) {
                uint32_t b[4];
                ldmatrix<4, false>(b, k_s + (nb * 8 + (lane / 16) * 8 + lane % 8) * LD + kk * 16 + (lane / 8 % 2) * 8);
                mma_m16n8k16(s[nb], q_frag[kk], b[0], b[1]);
                mma_m16n8k16(s[nb + 1], q_frag[kk], b[2], b[3]);
            }
        }

        // Online softmax. Element i of s[nb] is row g + 8 * (i / 2), key
        // kt + nb * 8 + 2t + (i & 1); keys past the end score -inf.
        float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int nb = 0; nb < NB_S; ++nb) {
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const int key = kt + nb * 8 + 2 * t + (i & 1);
                s[nb][i] = key < len ? s[nb][i] * p.scale_log2 : -INFINITY;
                mx[i / 2] = fmaxf(mx[i / 2], s[nb][i]);
            }
        }
        float alpha[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            // The 4 lanes of a row group (t = 0..3) hold its 32 keys.
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
            const float m_new = fmaxf(m_run[r], mx[r]);  // finite: the tile has a valid key
            alpha[r] = exp2f(m_run[r] - m_new);         // 0 on the first tile (m_run = -inf)
            m_run[r] = m_new;
            l_run[r] *= alpha[r];
        }
        // P in fp16 as A operands of P V: k-step ks covers keys 16ks..16ks+15,
        // i.e. s[2ks] (registers 0, 1) and s[2ks + 1] (registers 2, 3).
        uint32_t p_frag[KS_PV][4];
#pragma unroll
        for (int nb = 0; nb < NB_S; ++nb) {
            __half ph[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                ph[i] = __float2half(exp2f(s[nb][i] - m_run[i / 2]));  // exp2(-inf) = 0
                l_run[i / 2] += __half2float(ph[i]);
            }
            p_frag[nb / 2][(nb % 2) * 2 + 0] = pack_half2(ph[0], ph[1]);
            p_frag[nb / 2][(nb % 2) * 2 + 1] = pack_half2(ph[2], ph[3]);
        }
#pragma unroll
        for (int nd = 0; nd < NB_O; ++nd) {
            o[nd][0] *= alpha[0];
            o[nd][1] *= alpha[0];
            o[nd][2] *= alpha[1];
            o[nd][3] *= alpha[1];
        }
        // O += P V. V rows are keys, so B (k = key, n = dim) comes through
        // ldmatrix.trans: matrices (keys +0 | +8) x (dims +0 | +8).
#pragma unroll
        for (int ks = 0; ks < KS_PV; ++ks) {
#pragma unroll
            for (int nd = 0; nd < NB_O; nd += 2) {
                uint32_t b[4];
                ldmatrix<4, true>(b, v_s + (ks * 16 + (lane / 8 % 2) * 8 + lane % 8) * LD + nd * 8 + (lane / 16) * 8);
                mma_m16n8k16(o[nd], p_frag[ks], b[0], b[1]);
                mma_m16n8k16(o[nd + 1], p_frag[ks], b[2], b[3]);
            }
        }
        // Tile j read by every thread before tile j + 2 overwrites its stage.
        if (shared) {
            __syncthreads();
        } else {
            __syncwarp();
        }
    }

    // l: the row sums over the 4 lanes of each row group; then O / l.
    __half* out = p.out + (size_t)head * D + 2 * t;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 1);
        l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 2);
        const int row = row0 + g + 8 * r;
        if (row < len) {
            const float inv_l = 1.0f / l_run[r];
            __half* dst = out + (size_t)(start + row) * H;
#pragma unroll
            for (int nd = 0; nd < NB_O; ++nd) {
                *reinterpret_cast<uint32_t*>(dst + nd * 8) =
                    pack_half2(__float2half(o[nd][2 * r] * inv_l), __float2half(o[nd][2 * r + 1] * inv_l));
            }
        }
    }
}

extern "C" __global__ void __launch_bounds__(32 * tc_warps(32)) BERTRT_EXPORT(attention_tc_d32_f16)(const AttentionTcParams p) {
    attention_tc<32>(p);
}
extern "C" __global__ void __launch_bounds__(32 * tc_warps(64)) BERTRT_EXPORT(attention_tc_d64_f16)(const AttentionTcParams p) {
    attention_tc<64>(p);
}
extern "C" __global__ void __launch_bounds__(32 * tc_warps(128)) BERTRT_EXPORT(attention_tc_d128_f16)(const AttentionTcParams p) {
    attention_tc<128>(p);
}

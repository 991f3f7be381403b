// mma_selftest.cu: one-warp kernels that exercise mma.cuh's instructions
// against the PTX ISA's documented layouts, for tests (tests/tensor_cores_emulated.rs
// runs them under the emulation; they compile for the GPU too).
//
// The fragment layouts below are written out here on purpose, apart from the
// emulation's copy in simt_emu.cpp: a test that built its fragments with the
// emulation's own mapping could not catch a wrong mapping.
#include "common.cuh"
#include "mma.cuh"

// D = A B + C: a [16][16] fp16 row-major, b [16][8] fp16 row-major (k, n),
// c and d [16][8] f32 row-major. Block: one warp.
struct MmaSelftestParams {
    const __half* a;
    const __half* b;
    const float* c;
    float* d;
};
BERTRT_PARAMS_SIZE(MmaSelftestParams, 32);

extern "C" __global__ void __launch_bounds__(32) BERTRT_EXPORT(mma_selftest_f16)(const MmaSelftestParams p) {
    const int lane = threadIdx.x, g = lane >> 2, t = lane % 4;
    // A: register r holds (row, col) and (row, col + 1) with row g (+8 for
    // r = 1, 3) and col 2t (+8 for r = 2, 3).
    uint32_t a[4];
    for (int r = 0; r < 4; ++r) {
        const int row = g + (r % 2) * 8, col = 2 * t + (r / 2) * 8;
        a[r] = pack_half2(p.a[row * 16 + col], p.a[row * 16 + col + 1]);
    }
    // B: register r holds k = 2t, 2t + 1 (+8 for r = 1) of column n = g.
    uint32_t b[2];
    for (int r = 0; r < 2; ++r) {
        const int k = 2 * t + r * 8;
        b[r] = pack_half2(p.b[k * 8 + g], p.b[(k + 1) * 8 + g]);
    }
    // C, D: element i at row g (+8 for i >= 2), col 2t + (i & 1).
    float d[4];
    for (int i = 0; i < 4; ++i) d[i] = p.c[(g + (i / 2) * 8) * 8 + 2 * t + (i & 1)];
    mma_m16n8k16(d, a, b[0], b[1]);
    for (int i = 0; i < 4; ++i) p.d[(g + (i / 2) * 8) * 8 + 2 * t + (i & 1)] = d[i];
}

// ldmatrix, all six variants. Shared memory holds 32 rows of 8 b16 values,
// value(m, row, col) = m * 64 + row * 8 + col for row `row` of matrix m,
// stored at smem row (m * 8 + row) * 7 % 32 (a permutation) with a stride of
// LDM_SELFTEST_LD halves, so a lane that addressed the wrong row shows.
// out[v][lane][reg] (u32, 6 x 32 x 4), v = x1, x2, x4, x1.trans, x2.trans,
// x4.trans; registers a variant does not load are left 0. Block: one warp.
constexpr int LDM_SELFTEST_LD = 24;
struct LdmatrixSelftestParams {
    uint32_t* out;
};
BERTRT_PARAMS_SIZE(LdmatrixSelftestParams, 8);

template <int N, bool TRANS>
__device__ __forceinline__ void ldmatrix_selftest_variant(const __half* smem, uint32_t* out, int lane) {
    // Lanes 8m..8m+7 address matrix m's rows; lanes past 8N pass a null
    // address, which ldmatrix must ignore.
    const int m = lane / 8, row = lane % 8;
    const __half* addr = m < N ? smem + ((m * 8 + row) * 7 % 32) * LDM_SELFTEST_LD : nullptr;
    uint32_t r[N];
    ldmatrix<N, TRANS>(r, addr);
    for (int i = 0; i < 4; ++i) out[lane * 4 + i] = i < N ? r[i] : 0u;
}

extern "C" __global__ void __launch_bounds__(32) BERTRT_EXPORT(ldmatrix_selftest_f16)(const LdmatrixSelftestParams p) {
    __half* smem = reinterpret_cast<__half*>(dynamic_smem());
    const int lane = threadIdx.x;
    for (int e = lane; e < 32 * 8; e += 32) {
        const int m = e / 64, row = e / 8 % 8, col = e % 8;
        unsigned short v = (unsigned short)e;  // = m * 64 + row * 8 + col
#ifdef BERTRT_EMU
        __half h;
        h.bits_ = v;
#else
        const __half h = __ushort_as_half(v);
#endif
        smem[((m * 8 + row) * 7 % 32) * LDM_SELFTEST_LD + col] = h;
    }
    __syncwarp();
    ldmatrix_selftest_variant<1, false>(smem, p.out + 0 * 128, lane);
    ldmatrix_selftest_variant<2, false>(smem, p.out + 1 * 128, lane);
    ldmatrix_selftest_variant<4, false>(smem, p.out + 2 * 128, lane);
    ldmatrix_selftest_variant<1, true>(smem, p.out + 3 * 128, lane);
    ldmatrix_selftest_variant<2, true>(smem, p.out + 4 * 128, lane);
    ldmatrix_selftest_variant<4, true>(smem, p.out + 5 * 128, lane);
}

// cp.async groups. Each lane owns three 16-byte chunks of shared memory,
// filled with 0xFFFFFFFF, then copies src chunks 0 and 1 in two committed
// groups and chunk 2 uncommitted, and records the first word of each chunk
// at five points into out[lane][point][chunk] (u32, 32 x 5 x 3):
//   0: before any wait    1: after wait_group 1    2: after wait_group 0
//   3: after commit + wait_group 0                 4: unused (zeros)
// src: [32 lanes][3 chunks][4] u32. What the GPU guarantees: chunk 0 at 1..3,
// chunk 1 at 2..3, chunk 2 at 3. The emulation completes each copy as late as
// allowed, so it also shows 0xFFFFFFFF everywhere else. Block: one warp.
struct CpAsyncSelftestParams {
    const uint32_t* src;
    uint32_t* out;
};
BERTRT_PARAMS_SIZE(CpAsyncSelftestParams, 16);

extern "C" __global__ void __launch_bounds__(32) BERTRT_EXPORT(cp_async_selftest_f16)(const CpAsyncSelftestParams p) {
    uint32_t* smem = reinterpret_cast<uint32_t*>(dynamic_smem());
    const int lane = threadIdx.x;
    uint32_t* mine = smem + lane * 12;
    const uint32_t* src = p.src + lane * 12;
    for (int i = 0; i < 12; ++i) mine[i] = 0xFFFFFFFFu;
    uint32_t* out = p.out + lane * 15;
    auto record = [&](int point) {
        for (int c = 0; c < 3; ++c) out[point * 3 + c] = mine[c * 4];
    };
    cp_async_16(mine, src);
    cp_async_commit();
    cp_async_16(mine + 4, src + 4);
    cp_async_commit();
    cp_async_16(mine + 8, src + 8);
    record(0);
    cp_async_wait<1>();
    record(1);
    cp_async_wait<0>();
    record(2);
    cp_async_commit();
    cp_async_wait<0>();
    record(3);
    for (int c = 0; c < 3; ++c) out[12 + c] = 0;
}

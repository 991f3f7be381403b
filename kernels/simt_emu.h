// simt_emu.h: just enough of CUDA's SIMT model to run bertrt's kernels on the
// CPU, for tests on machines without a GPU.
//
// build.rs compiles every kernels/*.cu with the host C++ compiler and
// `-include kernels/simt_emu.h`; simt_emu.cpp holds the runtime.
//
// Model:
// - A launch runs every block of the grid; blocks are spread over a few OS
//   worker threads, one block at a time per worker.
// - Inside a block, every CUDA thread is a fiber (ucontext) with its own 64 KB
//   stack. A per-worker scheduler runs them warp-serially in a fixed order:
//   one warp's lanes (round-robin, switching at shuffles) until all of them
//   wait at a __syncthreads or have finished, then the next warp; warp 0 first
//   in even blocks, the last warp first (lanes reversed) in odd ones.
// - __syncthreads is a real barrier: every thread of the block must reach the
//   same __syncthreads (same file:line) before any continues. A thread that
//   exited, or threads waiting at different barriers, are reported as errors.
//   Because a warp runs a whole phase before the next warp starts, a missing
//   __syncthreads makes a thread read shared memory that other warps have not
//   written yet, or overwrite what they have not read yet. Dynamic shared
//   memory is poisoned with 0xFF bytes (NaN in fp16 and fp32) at the start of
//   every block, so the result is wrong and the tests notice.
// - Warp shuffles are warp-wide rendezvous: all lanes of the warp deposit their
//   value; the last lane to arrive computes every lane's result.
// - Static `__shared__` variables become `static thread_local`: one copy per
//   worker thread, so per block (blocks on a worker run one after another).
//   Dynamic shared memory is a per-block buffer returned by dynamic_smem().
// - __trap() ends the block and makes the launch return an error.
// - mma.sync, ldmatrix and __syncwarp are warp-wide rendezvous too
//   (warp_allgather); every lane rebuilds what it needs from the documented
//   lane-to-element layouts. cp.async copies complete as late as PTX allows
//   (in per-thread groups, at the cp.async.wait_group that must complete
//   them) in even blocks, and at once in odd blocks.
// - __half is IEEE binary16 with round-to-nearest-even conversions.
#pragma once
#define BERTRT_EMU 1

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __restrict__ __restrict
#define __shared__ static thread_local
#define __align__(n) alignas(n)
#define __launch_bounds__(...)

struct uint3 {
    unsigned x, y, z;
};
struct alignas(16) uint4 {
    unsigned x, y, z, w;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{x, y, z, w}; }
struct alignas(16) float4 {
    float x, y, z, w;
};
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace bertrt_emu {

struct ThreadState {
    uint3 thread_idx;
    unsigned linear;  // x + y*bx + z*bx*by
    unsigned lane;    // linear % 32
    unsigned warp;    // linear / 32
};
struct BlockState {
    uint3 block_idx;
    dim3 block_dim;
    dim3 grid_dim;
    unsigned char* dyn_smem;
};

extern thread_local ThreadState* tl_thread;
extern thread_local BlockState tl_block;

void syncthreads(const char* file, int line);
uint64_t warp_exchange(unsigned mask, uint64_t bits, unsigned src_lane, const char* what);
[[noreturn]] void trap(const char* file, int line);

// Warp-wide all-gather (full warps only): every lane contributes `bytes`
// (<= 32) and receives every lane's contribution, lane-major, in `all`
// ([32][bytes]). The rendezvous behind __syncwarp, mma.sync and ldmatrix.
void warp_allgather(const void* mine, unsigned bytes, void* all, const char* what);

// Tensor-core and async-copy instructions (PTX ISA fragment layouts; see
// simt_emu.cpp). kernels/mma.cuh calls these under BERTRT_EMU.
//   d = a * b + c for mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32.
void mma_m16n8k16_f32_f16(float* d, const uint32_t* a, const uint32_t* b, const float* c);
//   ldmatrix.sync.aligned.m8n8.x{num}{.trans}.shared.b16 r, [row_addr].
void ldmatrix_b16(uint32_t* r, unsigned num, bool trans, const void* row_addr);
// cp.async (.ca/.cg) of `bytes` into dynamic shared memory. In even blocks
// the copies are deferred to the cp.async.wait_group that must complete them
// (the latest moment PTX allows), so a kernel that reads its destination
// before waiting reads the poisoned or stale bytes; in odd blocks they are
// done at once (the earliest), so a copy into a buffer another warp has not
// finished reading overwrites it.
void cp_async(void* dst_smem, const void* src, unsigned bytes, const char* file, int line);
void cp_async_commit();
void cp_async_wait(unsigned pending_groups);

template <class T>
__forceinline__ T shfl(unsigned mask, T v, unsigned src, const char* what) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of a large type");
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    bits = warp_exchange(mask, bits, src, what);
    T out;
    std::memcpy(&out, &bits, sizeof(T));
    return out;
}

}  // namespace bertrt_emu

#define threadIdx (::bertrt_emu::tl_thread->thread_idx)
#define blockIdx (::bertrt_emu::tl_block.block_idx)
#define blockDim (::bertrt_emu::tl_block.block_dim)
#define gridDim (::bertrt_emu::tl_block.grid_dim)
#define warpSize 32
#define __syncthreads() ::bertrt_emu::syncthreads(__FILE__, __LINE__)
// Full-warp masks only (as bertrt's kernels use it): a warp rendezvous.
inline void __syncwarp(unsigned mask = 0xffffffffu) {
    (void)mask;
    ::bertrt_emu::warp_allgather(nullptr, 0, nullptr, "__syncwarp");
}
#define __trap() ::bertrt_emu::trap(__FILE__, __LINE__)

inline unsigned char* bertrt_emu_dynamic_smem() { return ::bertrt_emu::tl_block.dyn_smem; }

// Shuffles: source lane as PTX shfl.sync defines it for each mode; a source
// outside the caller's `width` segment returns the caller's own value.
template <class T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    const unsigned lane = ::bertrt_emu::tl_thread->lane;
    const unsigned seg_end = (lane / width + 1) * width;
    unsigned src = lane ^ (unsigned)lane_mask;
    if (src >= seg_end) src = lane;
    return ::bertrt_emu::shfl(mask, v, src, "__shfl_xor_sync");
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    const unsigned lane = ::bertrt_emu::tl_thread->lane;
    const unsigned src = (lane % width) + delta >= (unsigned)width ? lane : lane + delta;
    return ::bertrt_emu::shfl(mask, v, src, "__shfl_down_sync");
}
template <class T>
inline T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
    const unsigned lane = ::bertrt_emu::tl_thread->lane;
    const unsigned src = (lane / width) * width + ((unsigned)src_lane % width);
    return ::bertrt_emu::shfl(mask, v, src, "__shfl_sync");
}

template <class T>
__forceinline__ T __ldg(const T* p) { return *p; }
__forceinline__ int min(int a, int b) { return a < b ? a : b; }
__forceinline__ int max(int a, int b) { return a > b ? a : b; }

__forceinline__ float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
__forceinline__ float __expf(float x) { return std::exp(x); }
__forceinline__ float __fdividef(float a, float b) { return a / b; }

// ---- __half: IEEE binary16 stored as bits ----------------------------------
struct __half {
    uint16_t bits_;
};

__forceinline__ float __half2float(__half h) {
    const uint32_t sign = (uint32_t)(h.bits_ & 0x8000u) << 16;
    const uint32_t exp = (h.bits_ >> 10) & 0x1fu;
    uint32_t man = h.bits_ & 0x3ffu;
    uint32_t f;
    if (exp == 0x1f) {
        f = sign | 0x7f800000u | (man << 13);  // inf / nan
    } else if (exp != 0) {
        f = sign | ((exp + 112u) << 23) | (man << 13);  // normal: rebias 15 -> 127
    } else if (man == 0) {
        f = sign;  // +-0
    } else {
        // subnormal: value = man * 2^-24; normalise.
        int e = 113;
        while ((man & 0x400u) == 0) {
            man <<= 1;
            --e;
        }
        f = sign | ((uint32_t)e << 23) | ((man & 0x3ffu) << 13);
    }
    float out;
    std::memcpy(&out, &f, 4);
    return out;
}

// Round to nearest, ties to even; overflow to inf; NaN stays NaN.
__forceinline__ __half __float2half(float x) {
    uint32_t f;
    std::memcpy(&f, &x, 4);
    const uint16_t sign = (uint16_t)((f >> 16) & 0x8000u);
    const uint32_t abs = f & 0x7fffffffu;
    __half h;
    if (abs >= 0x7f800000u) {  // inf or nan
        h.bits_ = sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u);
        return h;
    }
    if (abs >= 0x477ff000u) {  // >= 65520 rounds to inf
        h.bits_ = sign | 0x7c00u;
        return h;
    }
    if (abs >= 0x38800000u) {  // normal half (>= 2^-14)
        const uint32_t mant_odd = (abs >> 13) & 1u;
        const uint32_t rounded = abs + 0xfffu + mant_odd;  // RNE on the 13 dropped bits
        h.bits_ = sign | (uint16_t)((rounded - 0x38000000u) >> 13);
        return h;
    }
    if (abs < 0x33000000u) {  // < 2^-25 (half of the smallest subnormal): to zero
        h.bits_ = sign;
        return h;
    }
    // Subnormal half: value = m * 2^-24, m = round(abs_value * 2^24).
    const uint32_t e = abs >> 23;              // biased f32 exponent, 102..112
    const uint32_t m = (abs & 0x7fffffu) | 0x800000u;  // 24-bit significand
    const uint32_t shift = 126u - e;            // 14..24
    uint32_t q = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u);
    const uint32_t halfway = 1u << (shift - 1u);
    if (rem > halfway || (rem == halfway && (q & 1u))) ++q;
    h.bits_ = sign | (uint16_t)q;
    return h;
}
__forceinline__ __half __float2half_rn(float x) { return __float2half(x); }

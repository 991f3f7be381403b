// mma.cuh: the tensor-core and async-copy instructions bertrt's kernels use,
// as small device functions. Under nvcc each is one inline PTX instruction;
// under the CPU emulation (BERTRT_EMU) each calls the emulation in
// simt_emu.cpp, so a kernel's source is the same for both.
//
//   mma_m16n8k16      d += a * b, mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32
//   ldmatrix<N, T>    ldmatrix.sync.aligned.m8n8.x{N}{.trans if T}.shared.b16
//   cp_async_16       cp.async.ca.shared.global, 16 bytes
//   cp_async_commit   cp.async.commit_group
//   cp_async_wait<N>  cp.async.wait_group N
//
// Fragment layouts (which lane holds which element) are the PTX ISA's; they
// are spelled out once, in simt_emu.cpp, and checked by mma_selftest.cu.
// Requires sm_80 (cp.async; mma.m16n8k16 and ldmatrix need sm_75+).
#pragma once
#include "common.cuh"

// Two fp16 values as one .f16x2 register: `lo` in the low 16 bits (the
// element with the lower index in every fragment layout).
__device__ __forceinline__ uint32_t pack_half2(__half lo, __half hi) {
#ifdef BERTRT_EMU
    return (uint32_t)lo.bits_ | ((uint32_t)hi.bits_ << 16);
#else
    return (uint32_t)__half_as_ushort(lo) | ((uint32_t)__half_as_ushort(hi) << 16);
#endif
}

__device__ __forceinline__ void mma_m16n8k16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#ifdef BERTRT_EMU
    const uint32_t b[2] = {b0, b1};
    ::bertrt_emu::mma_m16n8k16_f32_f16(d, a, b, d);
#else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

#ifndef BERTRT_EMU
__device__ __forceinline__ uint32_t smem_address(const void* p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}
#endif

// Each lane passes the shared-memory address of one 16-byte matrix row: lanes
// 8m..8m+7 address rows 0..7 of matrix m (m < N); other lanes' are ignored.
template <int N, bool TRANS>
__device__ __forceinline__ void ldmatrix(uint32_t (&r)[N], const __half* row) {
    static_assert(N == 1 || N == 2 || N == 4, "ldmatrix loads 1, 2 or 4 matrices");
#ifdef BERTRT_EMU
    ::bertrt_emu::ldmatrix_b16(r, N, TRANS, row);
#else
    const uint32_t a = smem_address(row);
    if constexpr (N == 1 && !TRANS) {
        asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(a) : "memory");
    } else if constexpr (N == 1 && TRANS) {
        asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(a) : "memory");
    } else if constexpr (N == 2 && !TRANS) {
        asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
                     : "=r"(r[0]), "=r"(r[1])
                     : "r"(a)
                     : "memory");
    } else if constexpr (N == 2 && TRANS) {
        asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
                     : "=r"(r[0]), "=r"(r[1])
                     : "r"(a)
                     : "memory");
    } else if constexpr (!TRANS) {
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(a)
                     : "memory");
    } else {
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(a)
                     : "memory");
    }
#endif
}

// 16 bytes global -> shared, asynchronously; both addresses 16-byte aligned.
// .ca: through L1, so warps of a block streaming the same K/V tiles share it.
#ifdef BERTRT_EMU
#define cp_async_16(dst_smem, src) ::bertrt_emu::cp_async((dst_smem), (src), 16, __FILE__, __LINE__)
#else
__device__ __forceinline__ void cp_async_16(void* dst_smem, const void* src) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 16;\n" ::"r"(smem_address(dst_smem)), "l"(src) : "memory");
}
#endif

// Closes the group of this thread's cp.asyncs issued since the last commit.
__device__ __forceinline__ void cp_async_commit() {
#ifdef BERTRT_EMU
    ::bertrt_emu::cp_async_commit();
#else
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

// Waits until at most N of this thread's committed groups are still in
// flight (the newest ones). Other lanes' copies need a __syncwarp after it.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#ifdef BERTRT_EMU
    ::bertrt_emu::cp_async_wait(N);
#else
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

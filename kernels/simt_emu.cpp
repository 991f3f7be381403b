// simt_emu.cpp: the runtime behind simt_emu.h (see its header comment for the
// model). Compiled by build.rs with the host C++ compiler into the same static
// library as the host-compiled kernels.
#include "simt_emu.h"

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace bertrt_emu {

thread_local ThreadState* tl_thread = nullptr;
thread_local BlockState tl_block = {};

namespace {

constexpr size_t kStackBytes = 64 * 1024;
constexpr size_t kGuardBytes = 4096;
// Largest dynamic shared memory a block may ask for: the H100 opt-in limit
// (227 KB); the CUDA launcher checks the real device's limit.
constexpr size_t kMaxDynSmem = 227 * 1024;
constexpr unsigned kMaxThreads = 1024;

enum class State { Runnable, AtBarrier, AtWarp, Done, Trapped };

// One cp.async, deferred until a wait_group completes its group.
struct AsyncCopy {
    void* dst;
    const void* src;
    unsigned bytes;
};

struct Fiber {
    ucontext_t ctx;
    unsigned char* stack = nullptr;  // mmap'd, guard page at the low end
    ThreadState ts;
    State state = State::Done;
    std::vector<AsyncCopy> open_group;               // issued, not yet committed
    std::deque<std::vector<AsyncCopy>> committed;    // oldest first
};

struct Warp {
    unsigned lanes = 0;    // threads in this warp (32 except a partial last warp)
    unsigned arrived = 0;  // lanes waiting at the current shuffle
    const char* what = nullptr;
    uint64_t val[32];
    unsigned src[32];
    uint64_t result[32];
    // warp_allgather: contributions, and the snapshot every lane reads after
    // the rendezvous (taken by the last lane to arrive, so a fast lane's next
    // contribution cannot overwrite what a slow lane has not read yet).
    unsigned char gather_in[32][32];
    unsigned char gather_out[32][32];
};

struct Launch {
    dim3 grid, block;
    size_t dyn_smem;
    void (*entry)(void*);
    void* ctx;
    std::atomic<uint64_t> next_block{0};
    std::atomic<bool> failed{false};
    std::mutex err_mu;
    std::string error;

    void fail(const std::string& msg) {
        std::lock_guard<std::mutex> g(err_mu);
        if (!failed.load()) error = msg;
        failed.store(true);
    }
};

// One per worker OS thread: the fibers of the block it is running.
struct Worker {
    Launch* launch = nullptr;
    ucontext_t sched;
    std::vector<Fiber> fibers;
    std::vector<Warp> warps;
    std::vector<unsigned char> smem_storage;
    unsigned nthreads = 0;
    unsigned bar_arrived = 0;
    const char* bar_file = nullptr;
    int bar_line = 0;
    std::string block_error;  // set by a fiber; the scheduler ends the block

    ~Worker() {
        for (auto& f : fibers)
            if (f.stack) munmap(f.stack, kStackBytes + kGuardBytes);
    }
};

thread_local Worker* tl_worker = nullptr;
thread_local Fiber* tl_fiber = nullptr;

std::string where() {
    char buf[160];
    const auto& b = tl_block.block_idx;
    const auto& t = tl_thread->thread_idx;
    snprintf(buf, sizeof buf, "block (%u,%u,%u) thread (%u,%u,%u)", b.x, b.y, b.z, t.x, t.y, t.z);
    return buf;
}

// Back to the scheduler; returns when this fiber is resumed.
void yield_to_scheduler() { swapcontext(&tl_fiber->ctx, &tl_worker->sched); }

[[noreturn]] void fail_fiber(const std::string& msg) {
    Worker* w = tl_worker;
    if (w->block_error.empty()) w->block_error = msg;
    tl_fiber->state = State::Trapped;
    setcontext(&w->sched);
    __builtin_unreachable();
}

void fiber_main() {
    Worker* w = tl_worker;
    w->launch->entry(w->launch->ctx);
    tl_fiber->state = State::Done;
    setcontext(&w->sched);
}

// Runs one block to completion; returns false (with block_error set) on a
// trap, a deadlock or a misuse of a barrier or shuffle.
bool run_block(Worker& w, uint64_t linear_block) {
    Launch& L = *w.launch;
    const dim3 g = L.grid;
    tl_block.block_idx = {unsigned(linear_block % g.x), unsigned(linear_block / g.x % g.y),
                          unsigned(linear_block / (uint64_t(g.x) * g.y))};
    tl_block.block_dim = L.block;
    tl_block.grid_dim = g;
    tl_block.dyn_smem = L.dyn_smem ? w.smem_storage.data() : nullptr;
    if (L.dyn_smem) std::memset(w.smem_storage.data(), 0xff, L.dyn_smem);  // poison: NaN in f16/f32

    const unsigned n = w.nthreads;
    for (unsigned i = 0; i < n; ++i) {
        Fiber& f = w.fibers[i];
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = f.stack + kGuardBytes;
        f.ctx.uc_stack.ss_size = kStackBytes;
        f.ctx.uc_link = nullptr;
        makecontext(&f.ctx, fiber_main, 0);
        f.state = State::Runnable;
    }
    // Apart from the getcontext loop above (a call there makes its counter
    // look clobbered to the compiler).
    for (unsigned i = 0; i < n; ++i) {
        w.fibers[i].open_group.clear();
        w.fibers[i].committed.clear();
    }
    for (auto& wp : w.warps) wp.arrived = 0;
    w.bar_arrived = 0;
    w.block_error.clear();

    // Warp-serial schedule: one warp runs (its lanes round-robin, switching at
    // shuffles) until every lane is at a barrier or finished; then the next
    // warp. A warp thus runs as far ahead of the others as CUDA allows, which
    // exposes a missing __syncthreads between warps. Even blocks go warp 0
    // first, odd blocks last warp first (lanes reversed too).
    const bool backward = (linear_block & 1) != 0;
    const unsigned nwarps = (unsigned)w.warps.size();
    unsigned done = 0;
    while (done < n) {
        bool progressed = false;
        for (unsigned kw = 0; kw < nwarps; ++kw) {
            const unsigned wi = backward ? nwarps - 1 - kw : kw;
            const unsigned lanes = w.warps[wi].lanes;
            bool warp_progressed = true;
            while (warp_progressed) {
                warp_progressed = false;
                for (unsigned kl = 0; kl < lanes; ++kl) {
                    const unsigned i = wi * 32 + (backward ? lanes - 1 - kl : kl);
                    Fiber& f = w.fibers[i];
                    if (f.state != State::Runnable) continue;
                    tl_fiber = &f;
                    tl_thread = &f.ts;
                    swapcontext(&w.sched, &f.ctx);
                    warp_progressed = progressed = true;
                    if (f.state == State::Trapped) return false;
                    if (f.state == State::Done) ++done;
                }
            }
        }
        if (!progressed && done < n) {
            unsigned at_bar = 0, at_warp = 0;
            for (unsigned i = 0; i < n; ++i) {
                at_bar += w.fibers[i].state == State::AtBarrier;
                at_warp += w.fibers[i].state == State::AtWarp;
            }
            char buf[256];
            snprintf(buf, sizeof buf,
                     "deadlock in block (%u,%u,%u): %u threads at __syncthreads (%s:%d), %u at a warp "
                     "shuffle, %u exited (a barrier or shuffle not reached by every thread)",
                     tl_block.block_idx.x, tl_block.block_idx.y, tl_block.block_idx.z, at_bar,
                     w.bar_file ? w.bar_file : "-", w.bar_line, at_warp, done);
            w.block_error = buf;
            return false;
        }
    }
    return true;
}

void worker_loop(Launch* L) {
    Worker w;
    w.launch = L;
    w.nthreads = L->block.x * L->block.y * L->block.z;
    w.fibers.resize(w.nthreads);
    w.warps.resize((w.nthreads + 31) / 32);
    for (unsigned i = 0; i < w.warps.size(); ++i) w.warps[i].lanes = std::min(32u, w.nthreads - 32 * i);
    w.smem_storage.resize(std::max<size_t>(L->dyn_smem, 16));
    for (unsigned i = 0; i < w.nthreads; ++i) {
        Fiber& f = w.fibers[i];
        void* mem = mmap(nullptr, kStackBytes + kGuardBytes, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (mem == MAP_FAILED) {
            L->fail("simt_emu: cannot allocate fiber stacks");
            return;
        }
        f.stack = static_cast<unsigned char*>(mem);
        mprotect(f.stack, kGuardBytes, PROT_NONE);
        const unsigned bx = L->block.x, by = L->block.y;
        f.ts.thread_idx = {i % bx, i / bx % by, i / (bx * by)};
        f.ts.linear = i;
        f.ts.lane = i % 32;
        f.ts.warp = i / 32;
    }
    tl_worker = &w;
    const uint64_t total = uint64_t(L->grid.x) * L->grid.y * L->grid.z;
    while (!L->failed.load()) {
        const uint64_t b = L->next_block.fetch_add(1);
        if (b >= total) break;
        if (!run_block(w, b)) {
            L->fail(w.block_error);
            break;
        }
    }
    tl_worker = nullptr;
    tl_fiber = nullptr;
    tl_thread = nullptr;
}

thread_local std::string tl_last_error;

}  // namespace

void syncthreads(const char* file, int line) {
    Worker& w = *tl_worker;
    if (w.bar_arrived == 0) {
        w.bar_file = file;
        w.bar_line = line;
    } else if (w.bar_line != line || std::strcmp(w.bar_file, file) != 0) {
        char buf[512];
        snprintf(buf, sizeof buf, "divergent __syncthreads: %s waits at %s:%d while others wait at %s:%d",
                 where().c_str(), file, line, w.bar_file, w.bar_line);
        fail_fiber(buf);
    }
    tl_fiber->state = State::AtBarrier;
    if (++w.bar_arrived == w.nthreads) {
        w.bar_arrived = 0;
        for (auto& f : w.fibers)
            if (f.state == State::AtBarrier) f.state = State::Runnable;
    }
    // Even the last thread yields, so every phase starts in scheduler order.
    yield_to_scheduler();
}

uint64_t warp_exchange(unsigned mask, uint64_t bits, unsigned src_lane, const char* what) {
    Worker& w = *tl_worker;
    ThreadState& t = *tl_thread;
    Warp& wp = w.warps[t.warp];
    const unsigned need = wp.lanes == 32 ? 0xffffffffu : ((1u << wp.lanes) - 1u);
    if ((mask & need) != need)
        fail_fiber(where() + ": " + what + " with a mask that leaves out lanes of the warp (bertrt's "
                                           "kernels shuffle with full warps only)");
    if (wp.arrived == 0) {
        wp.what = what;
    } else if (std::strcmp(wp.what, what) != 0) {
        fail_fiber(where() + ": divergent warp shuffles: " + what + " vs " + wp.what);
    }
    wp.val[t.lane] = bits;
    wp.src[t.lane] = src_lane < wp.lanes ? src_lane : t.lane;
    tl_fiber->state = State::AtWarp;
    if (++wp.arrived == wp.lanes) {
        wp.arrived = 0;
        for (unsigned l = 0; l < wp.lanes; ++l) wp.result[l] = wp.val[wp.src[l]];
        for (unsigned l = 0; l < wp.lanes; ++l) w.fibers[t.warp * 32 + l].state = State::Runnable;
    }
    yield_to_scheduler();
    return wp.result[t.lane];
}

void warp_allgather(const void* mine, unsigned bytes, void* all, const char* what) {
    Worker& w = *tl_worker;
    ThreadState& t = *tl_thread;
    Warp& wp = w.warps[t.warp];
    if (wp.lanes != 32) fail_fiber(where() + ": " + what + " in a partial warp (it needs all 32 lanes)");
    if (bytes > sizeof wp.gather_in[0]) fail_fiber(where() + ": " + what + ": warp_allgather of too many bytes");
    if (wp.arrived == 0) {
        wp.what = what;
    } else if (std::strcmp(wp.what, what) != 0) {
        fail_fiber(where() + ": divergent warp collectives: " + what + " vs " + wp.what);
    }
    if (bytes) std::memcpy(wp.gather_in[t.lane], mine, bytes);
    tl_fiber->state = State::AtWarp;
    if (++wp.arrived == wp.lanes) {
        wp.arrived = 0;
        std::memcpy(wp.gather_out, wp.gather_in, sizeof wp.gather_out);
        for (unsigned l = 0; l < wp.lanes; ++l) w.fibers[t.warp * 32 + l].state = State::Runnable;
    }
    yield_to_scheduler();
    for (unsigned l = 0; l < 32 && bytes; ++l)
        std::memcpy(static_cast<unsigned char*>(all) + l * bytes, wp.gather_out[l], bytes);
}

namespace {

// Element `i` of a run of packed 16-bit values: element 2k is the low half of
// register k (the .f16x2 / .b16 packing).
uint16_t half_at(const uint32_t* regs, unsigned i) {
    return (uint16_t)(regs[i / 2] >> (16 * (i % 2)));
}

float f16_bits_to_float(uint16_t bits) {
    __half h;
    h.bits_ = bits;
    return __half2float(h);
}

bool in_dynamic_smem(const void* p, size_t bytes) {
    const unsigned char* b = tl_block.dyn_smem;
    const unsigned char* q = static_cast<const unsigned char*>(p);
    return b && q >= b && q + bytes <= b + tl_worker->launch->dyn_smem;
}

}  // namespace

// Fragment layouts of mma.m16n8k16 with .f16 A/B and .f32 C/D, as the PTX ISA
// documents them, with g = lane >> 2 and t = lane % 4:
//   A (16x16, row): element i (0..7) of the 4 registers is at
//       row g for i in {0,1,4,5}, else g + 8;  col 2t + (i & 1), + 8 for i >= 4.
//   B (16x8, col):  element i (0..3) of the 2 registers is at
//       k 2t + (i & 1), + 8 for i >= 2;        n g.
//   C, D (16x8):    element i (0..3) is at row g for i < 2, else g + 8; col 2t + (i & 1).
void mma_m16n8k16_f32_f16(float* d, const uint32_t* a, const uint32_t* b, const float* c) {
    struct Frag {
        uint32_t a[4];
        uint32_t b[2];
    };
    Frag mine;
    std::memcpy(mine.a, a, sizeof mine.a);
    std::memcpy(mine.b, b, sizeof mine.b);
    Frag all[32];
    warp_allgather(&mine, sizeof mine, all, "mma.sync.aligned.m16n8k16");
    float A[16][16], B[16][8];
    for (unsigned lane = 0; lane < 32; ++lane) {
        const unsigned g = lane >> 2, t = lane % 4;
        for (unsigned i = 0; i < 8; ++i) {
            const unsigned row = (i < 2 || (i >= 4 && i < 6)) ? g : g + 8;
            const unsigned col = 2 * t + (i & 1) + (i >= 4 ? 8 : 0);
            A[row][col] = f16_bits_to_float(half_at(all[lane].a, i));
        }
        for (unsigned i = 0; i < 4; ++i) {
            const unsigned k = 2 * t + (i & 1) + (i >= 2 ? 8 : 0);
            B[k][g] = f16_bits_to_float(half_at(all[lane].b, i));
        }
    }
    const unsigned g = tl_thread->lane >> 2, t = tl_thread->lane % 4;
    float out[4];
    for (unsigned i = 0; i < 4; ++i) {
        const unsigned row = i < 2 ? g : g + 8, col = 2 * t + (i & 1);
        // fp16 products are exact in fp32; accumulate in fp32 from C.
        float acc = c[i];
        for (unsigned k = 0; k < 16; ++k) acc += A[row][k] * B[k][col];
        out[i] = acc;
    }
    std::memcpy(d, out, sizeof out);  // d may alias c
}

// ldmatrix .m8n8 .b16: matrix m's eight rows (16 bytes each) are addressed by
// lanes 8m..8m+7 (row j by lane 8m + j); the addresses of the other lanes are
// ignored. Register m of lane l holds, with g = l >> 2 and t = l % 4,
//   row g, columns 2t and 2t + 1 (low half first);
//   with .trans: rows 2t and 2t + 1 of column g.
void ldmatrix_b16(uint32_t* r, unsigned num, bool trans, const void* row_addr) {
    if (num != 1 && num != 2 && num != 4) fail_fiber(where() + ": ldmatrix with .x" + std::to_string(num));
    const void* addrs[32];
    warp_allgather(&row_addr, sizeof row_addr, addrs,
                   trans ? "ldmatrix.sync.aligned.m8n8.trans.b16" : "ldmatrix.sync.aligned.m8n8.b16");
    for (unsigned l = 0; l < 8 * num; ++l) {
        if (reinterpret_cast<uintptr_t>(addrs[l]) % 16 != 0 || !in_dynamic_smem(addrs[l], 16)) {
            char buf[128];
            snprintf(buf, sizeof buf, ": ldmatrix row address %p of lane %u is not 16 aligned in shared memory",
                     addrs[l], l);
            fail_fiber(where() + buf);
        }
    }
    const unsigned g = tl_thread->lane >> 2, t = tl_thread->lane % 4;
    auto elem = [&](unsigned m, unsigned row, unsigned col) {
        uint16_t v;
        std::memcpy(&v, static_cast<const unsigned char*>(addrs[8 * m + row]) + 2 * col, 2);
        return (uint32_t)v;
    };
    for (unsigned m = 0; m < num; ++m) {
        const uint32_t lo = trans ? elem(m, 2 * t, g) : elem(m, g, 2 * t);
        const uint32_t hi = trans ? elem(m, 2 * t + 1, g) : elem(m, g, 2 * t + 1);
        r[m] = lo | (hi << 16);
    }
}

void cp_async(void* dst_smem, const void* src, unsigned bytes, const char* file, int line) {
    char buf[512];
    const bool size_ok = bytes == 4 || bytes == 8 || bytes == 16;
    const bool aligned = reinterpret_cast<uintptr_t>(dst_smem) % bytes == 0 && reinterpret_cast<uintptr_t>(src) % bytes == 0;
    if (!size_ok || !aligned || !in_dynamic_smem(dst_smem, bytes)) {
        snprintf(buf, sizeof buf,
                 "cp.async at %s:%d in %s: %u bytes from %p to %p (needs 4, 8 or 16 bytes, both addresses aligned "
                 "to the size, the destination in the block's dynamic shared memory)",
                 file, line, where().c_str(), bytes, src, dst_smem);
        fail_fiber(buf);
    }
    // Even blocks complete each copy at the latest moment PTX allows (the
    // wait_group that must complete it), exposing reads before the wait; odd
    // blocks at the earliest (now), exposing a copy issued into a buffer other
    // warps are still reading.
    const dim3 g = tl_block.grid_dim;
    const uint3 b = tl_block.block_idx;
    const uint64_t linear = b.x + uint64_t(g.x) * (b.y + uint64_t(g.y) * b.z);
    if (linear & 1) {
        std::memcpy(dst_smem, src, bytes);
    } else {
        tl_fiber->open_group.push_back({dst_smem, src, bytes});
    }
}

void cp_async_commit() {
    Fiber& f = *tl_fiber;
    f.committed.push_back(std::move(f.open_group));
    f.open_group.clear();
}

void cp_async_wait(unsigned pending_groups) {
    Fiber& f = *tl_fiber;
    while (f.committed.size() > pending_groups) {
        for (const AsyncCopy& c : f.committed.front()) std::memcpy(c.dst, c.src, c.bytes);
        f.committed.pop_front();
    }
}

[[noreturn]] void trap(const char* file, int line) {
    char buf[512];
    snprintf(buf, sizeof buf, "__trap() at %s:%d in %s", file, line, where().c_str());
    fail_fiber(buf);
}

}  // namespace bertrt_emu

using namespace bertrt_emu;

// Runs a whole grid. `entry(ctx)` is called once per CUDA thread with the
// thread's builtins set; it calls the host-compiled kernel. Returns 0, or
// nonzero with a message for bertrt_emu_last_error.
extern "C" int bertrt_emu_launch(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                                 size_t dyn_smem, void (*entry)(void*), void* ctx) {
    tl_last_error.clear();
    const uint64_t threads = uint64_t(bx) * by * bz;
    const uint64_t blocks = uint64_t(gx) * gy * gz;
    char buf[256];
    if (threads == 0 || threads > kMaxThreads || bz > 64 || blocks == 0 || gy > 65535 || gz > 65535) {
        snprintf(buf, sizeof buf, "invalid launch: grid (%u,%u,%u) block (%u,%u,%u)", gx, gy, gz, bx, by, bz);
        tl_last_error = buf;
        return 1;
    }
    if (dyn_smem > kMaxDynSmem) {
        snprintf(buf, sizeof buf, "invalid launch: %zu bytes of dynamic shared memory > %zu", dyn_smem, kMaxDynSmem);
        tl_last_error = buf;
        return 2;
    }
    Launch L;
    L.grid = dim3(gx, gy, gz);
    L.block = dim3(bx, by, bz);
    L.dyn_smem = dyn_smem;
    L.entry = entry;
    L.ctx = ctx;
    unsigned hw = std::max(1u, std::thread::hardware_concurrency());
    const unsigned nworkers = (unsigned)std::min<uint64_t>({uint64_t(hw), blocks, 8});
    if (nworkers <= 1) {
        worker_loop(&L);
    } else {
        std::vector<std::thread> pool;
        for (unsigned i = 0; i < nworkers; ++i) pool.emplace_back(worker_loop, &L);
        for (auto& t : pool) t.join();
    }
    if (L.failed.load()) {
        tl_last_error = L.error;
        return 3;
    }
    return 0;
}

// Copies the calling thread's last launch error (NUL-terminated, truncated to
// `len`); returns its full length.
extern "C" size_t bertrt_emu_last_error(char* buf, size_t len) {
    if (len) {
        const size_t n = std::min(len - 1, tl_last_error.size());
        std::memcpy(buf, tl_last_error.data(), n);
        buf[n] = 0;
    }
    return tl_last_error.size();
}

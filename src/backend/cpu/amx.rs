//! bf16 GEMM blocks on AMX tiles (Sapphire Rapids and later): `tdpbf16ps`
//! multiplies a 16 x 32 bf16 tile of A by a 32 x 16 tile of B (k in pairs,
//! the layout `packed` already uses for bf16) into 16 x 16 f32. AMX has no
//! stable Rust intrinsics, so the instructions are `asm!`; the OS must first
//! grant the process the tile state (`arch_prctl(ARCH_REQ_XCOMP_PERM)`).
#![allow(unsafe_code)]

use std::sync::OnceLock;

/// Rows and columns of one accumulator tile.
pub const TILE: usize = 16;
/// bf16 pairs along K per tile step (32 values of k).
pub const PAIRS: usize = 16;

/// Whether this CPU has AMX-BF16 and the OS granted the tile state; asked
/// once per process.
pub fn available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        {
            // SAFETY: cpuid is available on every x86_64 CPU; leaf 7 sub-leaf
            // 0 is defined on any CPU that reports AVX-512 (checked first).
            #[allow(unused_unsafe)]
            let l7 = unsafe { std::arch::x86_64::__cpuid_count(7, 0) };
            let tile = l7.edx & (1 << 24) != 0;
            let bf16 = l7.edx & (1 << 22) != 0;
            tile && bf16 && request_tile_permission()
        }
        #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
        false
    })
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_tile_permission() -> bool {
    const SYS_ARCH_PRCTL: usize = 158;
    const ARCH_REQ_XCOMP_PERM: usize = 0x1023;
    const XFEATURE_XTILEDATA: usize = 18;
    let ret: isize;
    // SAFETY: arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA) only asks the kernel
    // to enlarge this process's saved register state; it touches no memory
    // of ours. rcx and r11 are clobbered by `syscall`.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL as isize => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

/// u32 (bf16 pairs) in one K step of a 32-row A block or a 32-column B
/// panel: two tiles of 16 x 16 pairs.
pub const STEP: usize = 2 * TILE * PAIRS;

/// Where pair `j` of row `r` of a 32-row A block sits in tile order: K steps
/// of [`STEP`], each the block's rows 0-15 then 16-31, 16 pairs per row, so
/// every A tile is 1 KiB of contiguous memory.
pub fn a_tile_index(r: usize, j: usize) -> usize {
    (j / PAIRS) * STEP + r * PAIRS + j % PAIRS
}

/// This thread's tile state, configured for [`Tiles::block`] once and
/// released on drop. Tile state belongs to the thread, hence not `Send`.
pub struct Tiles {
    _thread_bound: std::marker::PhantomData<*const ()>,
}

impl Tiles {
    /// Configures the tiles: tmm0-3 accumulators (16 x 16 f32), tmm4-5 A
    /// (16 rows x 16 pairs), tmm6-7 B (16 pairs x 16 columns). Needs
    /// [`available`].
    pub fn configure() -> Tiles {
        assert!(available(), "amx::Tiles without AMX");
        let cfg = config();
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AMX present and permitted (asserted); ldtilecfg reads the
        // 64-byte aligned config it is given and nothing else.
        unsafe {
            std::arch::asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack));
        }
        Tiles {
            _thread_bound: std::marker::PhantomData,
        }
    }

    /// One block of C, `c[32 x 32] = a[32 x K] * b[K x 32]`, overwritten:
    /// - `a`: the block's rows in tile order ([`a_tile_index`]), K steps
    ///   of [`STEP`];
    /// - `segments`: B's K blocks in order, each whole steps of 16 pair rows
    ///   x 32 columns (a bf16 panel 32 columns wide), together as many steps
    ///   as `a`;
    /// - `bias`: 32 values the accumulators start from, else zeros;
    /// - `c`: 32 rows `ldc` apart from `c_off`.
    ///
    /// The whole K stays in the accumulator tiles: C is written once.
    pub fn block(
        &self,
        a: &[u32],
        segments: &[&[u32]],
        bias: Option<&[f32]>,
        c: &mut [f32],
        c_off: usize,
        ldc: usize,
    ) {
        self.block_with(a, segments, bias, c, c_off, ldc, &mut |_, _| {})
    }

    /// [`Self::block`], calling `between(step, steps)` after issuing each
    /// of its `steps` K steps: vector work placed there runs while the tile
    /// unit multiplies (the products queue behind their loads).
    #[allow(clippy::too_many_arguments)]
    pub fn block_with(
        &self,
        a: &[u32],
        segments: &[&[u32]],
        bias: Option<&[f32]>,
        c: &mut [f32],
        c_off: usize,
        ldc: usize,
        between: &mut dyn FnMut(usize, usize),
    ) {
        let steps: usize = segments.iter().map(|s| s.len() / STEP).sum();
        assert!(
            segments.iter().all(|s| s.len().is_multiple_of(STEP)) && a.len() == steps * STEP,
            "amx block: {} u32 of A for B segments of {:?} u32",
            a.len(),
            segments.iter().map(|s| s.len()).collect::<Vec<_>>()
        );
        let rows = 2 * TILE;
        assert!(
            bias.is_none_or(|b| b.len() == rows),
            "amx block: bias not 32 long"
        );
        assert!(
            ldc >= rows && c_off + (rows - 1) * ldc + rows <= c.len(),
            "amx block: c too short"
        );
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the tiles were configured by `self` on this thread (not
        // Send); the asserts above keep every tile row loaded inside a and
        // the segments and every row stored inside c, the only mutable borrow.
        unsafe {
            block_asm(a, segments, bias, c.as_mut_ptr().add(c_off), ldc, between)
        }
    }
}

impl Drop for Tiles {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: releases the tile state this thread configured in `configure`.
        unsafe {
            std::arch::asm!("tilerelease", options(nostack, nomem));
        }
    }
}

#[repr(C, align(64))]
struct TileConfig([u8; 64]);

fn config() -> TileConfig {
    let mut c = [0u8; 64];
    c[0] = 1; // palette
    for t in 0..8 {
        // colsb: 64 bytes per row for every tile; rows: 16.
        c[16 + 2 * t] = 64;
        c[48 + t] = TILE as u8;
    }
    TileConfig(c)
}

/// K steps ahead that [`block_asm`] prefetches its operands into L1: the
/// tile loads take their 16 rows from L2 otherwise, as nothing else brings
/// them in. 1, 2 and 4 steps ahead took 0.89, 0.88 and 0.91x the time
/// of none (BERT-base linears at 1024 rows, paired in one process).
const AHEAD: usize = 2;

/// Prefetches one K step of A or B ([`STEP`] u32, 32 lines) into L1. A
/// hint: it never faults, so the address may run past the end.
#[cfg(target_arch = "x86_64")]
#[inline]
fn prefetch_step(p: *const u32) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    for line in 0..STEP / 16 {
        // SAFETY: prefetch is only a hint; it reads nothing architecturally
        // and does not fault on any address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(line * 16).cast()) };
    }
}

#[cfg(target_arch = "x86_64")]
unsafe fn block_asm(
    a: &[u32],
    segments: &[&[u32]],
    bias: Option<&[f32]>,
    c: *mut f32,
    ldc: usize,
    between: &mut dyn FnMut(usize, usize),
) {
    use std::arch::asm;
    // A tiles are contiguous (64-byte rows); B tiles are the two 16-column
    // halves of a 32-column panel (128-byte rows).
    let (lda, ldb) = (64isize, 128isize);
    match bias {
        // A row stride of 0 repeats the 16 bias values down all 16 rows.
        Some(b) => asm!(
            "tileloadd tmm0, [{b} + {zero}*1]",
            "tileloadd tmm1, [{b} + {zero}*1 + 64]",
            "tileloadd tmm2, [{b} + {zero}*1]",
            "tileloadd tmm3, [{b} + {zero}*1 + 64]",
            b = in(reg) b.as_ptr(), zero = in(reg) 0isize,
            options(nostack, readonly),
        ),
        None => asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack, nomem)
        ),
    }
    let mut ak = a.as_ptr();
    let steps = a.len() / STEP;
    let mut step = 0;
    for seg in segments {
        let mut bk = seg.as_ptr();
        for _ in 0..seg.len() / STEP {
            // Each load placed just before its first use, so the next tile
            // loads overlap the products already issued.
            asm!(
                "tileloadd tmm4, [{a} + {lda}*1]",
                "tileloadd tmm6, [{b} + {ldb}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tileloadd tmm7, [{b} + {ldb}*1 + 64]",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tileloadd tmm5, [{a} + {lda}*1 + 1024]",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                a = in(reg) ak, b = in(reg) bk, lda = in(reg) lda, ldb = in(reg) ldb,
                options(nostack, readonly),
            );
            prefetch_step(ak.wrapping_add(AHEAD * STEP));
            prefetch_step(bk.wrapping_add(AHEAD * STEP));
            between(step, steps);
            step += 1;
            ak = ak.add(STEP);
            bk = bk.add(STEP);
        }
    }
    let ldc_b = (ldc * 4) as isize;
    let c1 = c.add(TILE * ldc);
    asm!(
        "tilestored [{c0} + {ldc}*1], tmm0",
        "tilestored [{c0} + {ldc}*1 + 64], tmm1",
        "tilestored [{c1} + {ldc}*1], tmm2",
        "tilestored [{c1} + {ldc}*1 + 64], tmm3",
        c0 = in(reg) c, c1 = in(reg) c1, ldc = in(reg) ldc_b,
        options(nostack),
    );
}

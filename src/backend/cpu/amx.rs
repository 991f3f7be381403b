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

/// One block of C: `c[32 x 32] = sum over segments of a[32 x 2kp] * b[2kp x 32]`
/// with
/// - `a`: bf16 pairs, 32 rows `lda` pairs apart from `a_off`, segment `i`
///   starting `k_at[i]` pairs further;
/// - `segments[i]`: `kp_i` rows of 32 pairs (one K block of a bf16 panel
///   32 columns wide), `kp_i` a multiple of [`PAIRS`];
/// - `c`: 32 rows `ldc` apart from `c_off`, overwritten.
///
/// The whole K stays in the accumulator tiles: C is written once.
pub struct Block<'a> {
    pub a: &'a [u32],
    pub a_off: usize,
    pub lda: usize,
    pub segments: &'a [(&'a [u32], usize)],
    pub c_off: usize,
    pub ldc: usize,
}

/// Runs one [`Block`]. Needs [`available`].
pub fn block(blk: &Block, c: &mut [f32]) {
    assert!(available(), "amx::block without AMX");
    let rows = 2 * TILE;
    for &(seg, k_at) in blk.segments {
        let kp = seg.len() / rows;
        assert!(
            kp > 0 && kp % PAIRS == 0 && seg.len() == kp * rows,
            "amx block: a segment of {} pairs is not whole tiles",
            seg.len()
        );
        assert!(k_at + kp <= blk.lda, "amx block: segment past the row of a");
    }
    assert!(
        blk.a_off + (rows - 1) * blk.lda + blk.lda <= blk.a.len(),
        "amx block: a too short"
    );
    assert!(
        blk.ldc >= rows && blk.c_off + (rows - 1) * blk.ldc + rows <= c.len(),
        "amx block: c too short"
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AMX present and permitted (asserted); the asserts above keep
    // every tile row the asm loads or stores inside a, the segments and c; c
    // is the only mutable borrow.
    unsafe {
        block_asm(blk, c)
    }
}

/// The palette-1 tile configuration: tmm0-3 accumulators (16 x 16 f32),
/// tmm4-5 A (16 rows x 16 pairs), tmm6-7 B (16 pairs x 16 columns).
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

#[cfg(target_arch = "x86_64")]
unsafe fn block_asm(blk: &Block, c: &mut [f32]) {
    use std::arch::asm;
    let cfg = config();
    let a = blk.a.as_ptr().add(blk.a_off);
    let cp = c.as_mut_ptr().add(blk.c_off);
    let lda = (blk.lda * 4) as isize;
    let ldb = (2 * TILE * 4) as isize;
    let ldc = (blk.ldc * 4) as isize;
    let a1 = a.add(TILE * blk.lda);
    let c1 = cp.add(TILE * blk.ldc);
    asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack));
    asm!(
        "tilezero tmm0",
        "tilezero tmm1",
        "tilezero tmm2",
        "tilezero tmm3",
        options(nostack, nomem)
    );
    for &(seg, k_at) in blk.segments {
        let b = seg.as_ptr();
        for step in 0..seg.len() / (2 * TILE) / PAIRS {
            let ak = a.add(k_at + step * PAIRS);
            let a1k = a1.add(k_at + step * PAIRS);
            let bk = b.add(step * PAIRS * 2 * TILE);
            asm!(
                "tileloadd tmm4, [{a0} + {lda}*1]",
                "tileloadd tmm5, [{a1} + {lda}*1]",
                "tileloadd tmm6, [{b} + {ldb}*1]",
                "tileloadd tmm7, [{b} + {ldb}*1 + 64]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                a0 = in(reg) ak, a1 = in(reg) a1k, b = in(reg) bk, lda = in(reg) lda, ldb = in(reg) ldb,
                options(nostack, readonly),
            );
        }
    }
    asm!(
        "tilestored [{c0} + {ldc}*1], tmm0",
        "tilestored [{c0} + {ldc}*1 + 64], tmm1",
        "tilestored [{c1} + {ldc}*1], tmm2",
        "tilestored [{c1} + {ldc}*1 + 64], tmm3",
        "tilerelease",
        c0 = in(reg) cp, c1 = in(reg) c1, ldc = in(reg) ldc,
        options(nostack),
    );
}

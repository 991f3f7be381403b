//! The fast CPU path's AVX-512 module: register tiles for the GEMMs (f32
//! FMA, and bf16 pairs widened for FMAs; `dpbf16` holds the `vdpbf16ps`
//! tile, which shares this module's tile frame), and vector exp, GELU and
//! LayerNorm. Every entry point is a safe function that checks the slices it
//! is given cover what the tile touches before any raw pointer is made, and
//! that is only reachable once [`avx512`] said the CPU has the features.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;
use std::sync::OnceLock;

/// Lanes of one register.
pub const LANES: usize = 16;
/// The tallest tile over every panel width.
pub const MAX_ROWS: usize = 14;

/// Most rows of one register tile with `nv` vectors per row: 24 to 28
/// accumulators (8 x 3, 14 x 2, 12 x 1) leave registers for the panel's
/// row and one broadcast.
pub fn max_rows(nv: usize) -> usize {
    match nv {
        3 => 8,
        2 => 14,
        _ => 12,
    }
}

/// What this CPU can run, read once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    pub avx512: bool,
    pub avx512_bf16: bool,
    /// `vdpbf16ps` issues at the FMA rate: on AMD's cores (a Zen 5 VM:
    /// 8.2 G per second per core for each, register-only), not on Intel's
    /// (Sapphire Rapids: 0.45 per cycle against 2 FMAs).
    pub bf16_dot_at_fma_rate: bool,
}

pub fn features() -> Features {
    static F: OnceLock<Features> = OnceLock::new();
    *F.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            let avx512 = is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl");
            let avx512_bf16 = avx512 && is_x86_feature_detected!("avx512bf16");
            Features {
                avx512,
                avx512_bf16,
                bf16_dot_at_fma_rate: avx512_bf16 && vendor_is_amd(),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Features {
            avx512: false,
            avx512_bf16: false,
            bf16_dot_at_fma_rate: false,
        }
    })
}

/// CPUID leaf 0's vendor string is "AuthenticAMD".
#[cfg(target_arch = "x86_64")]
fn vendor_is_amd() -> bool {
    let id = __cpuid(0);
    let bytes: Vec<u8> = [id.ebx, id.edx, id.ecx]
        .iter()
        .flat_map(|r| r.to_le_bytes())
        .collect();
    bytes == b"AuthenticAMD"
}

/// How a tile's accumulators start.
#[derive(Clone, Copy)]
pub enum Start<'a> {
    Zero,
    /// The panel's bias, `16 * nv` values.
    Bias(&'a [f32]),
    /// Continue from what `c` holds (a later K block).
    Accumulate,
    /// Continue from rows `ld` apart at the start of `src` (a later K
    /// block whose partial sums were kept apart from `c`).
    From {
        src: &'a [f32],
        ld: usize,
    },
}

/// One register tile's job: `c[r, j] (+)= sum_k a[r, k] * panel[k, j]` for
/// `r < rows`, `j < cols`, `k < kc`, then optionally GELU (erf form). A is
/// f32; the panel `P` is f32, or u32 for bf16 pairs along k (then it holds
/// `kc.div_ceil(2)` rows of `16 * nv` pairs).
pub struct Tile<'a, P = f32> {
    pub a: &'a [f32],
    /// A packed in blocks of 16 k ([`a_index`]): the K loop reads each
    /// step's rows at fixed offsets from one pointer, and packing A is a
    /// copy of 16-value row pieces rather than a transpose.
    pub a_off: usize,
    /// Rows of the packing (`rows` or more): a 16-k block is `16 * a_ks`.
    pub a_ks: usize,
    pub rows: usize,
    /// The packed weights of one panel, `16 * nv` values per row.
    pub panel: &'a [P],
    pub kc: usize,
    pub cols: usize,
    pub c_off: usize,
    pub ldc: usize,
    pub start: Start<'a>,
    pub gelu: bool,
}

/// Where element (r, k) of a tile's A lies, from `a_off`, with `ks` rows
/// per 16-k block: block `k / 16` holds each row's 16 values in turn.
pub fn a_index(r: usize, k: usize, ks: usize) -> usize {
    k / LANES * LANES * ks + r * LANES + k % LANES
}

/// Panics unless rows `r < rows` of width `w` at `off + r * ld` fit in `len`.
fn assert_rows(what: &str, len: usize, off: usize, ld: usize, rows: usize, w: usize) {
    let end = (rows - 1)
        .checked_mul(ld)
        .and_then(|x| x.checked_add(off)?.checked_add(w));
    assert!(
        rows > 0 && end.is_some_and(|e| e <= len),
        "{what}: {rows} rows of {w} at offset {off}, stride {ld}, do not fit in {len} values"
    );
}

impl<P> Tile<'_, P> {
    /// Panics unless every element the tile touches lies inside its slices
    /// and `c`, for panels `16 * nv` wide with `per_row` values of k per row.
    pub(super) fn check(&self, nv: usize, per_row: usize, c_len: usize) {
        assert!((1..=3).contains(&nv) && self.rows <= max_rows(nv) && self.cols <= LANES * nv);
        let w = LANES * nv;
        assert!(
            self.rows > 0 && self.kc > 0 && self.rows <= self.a_ks,
            "tile a: {} rows of {} in blocks of {} rows",
            self.rows,
            self.kc,
            self.a_ks
        );
        // The last block's last row ends furthest (a_ks >= rows).
        let end = self.a_off + a_index(self.rows - 1, self.kc - 1, self.a_ks) + 1;
        assert!(
            end <= self.a.len(),
            "tile a: {} x {} at {} need {end} values, have {}",
            self.rows,
            self.kc,
            self.a_off,
            self.a.len()
        );
        assert_rows("tile c", c_len, self.c_off, self.ldc, self.rows, self.cols);
        let panel_rows = self.kc.div_ceil(per_row);
        assert!(
            self.panel.len() >= panel_rows * w,
            "tile panel: {} values for {panel_rows} x {w}",
            self.panel.len(),
        );
        match self.start {
            Start::Bias(b) => assert!(b.len() >= w, "tile bias: {} values for {w}", b.len()),
            Start::From { src, ld } => {
                assert_rows("tile start", src.len(), 0, ld, self.rows, self.cols)
            }
            Start::Zero | Start::Accumulate => {}
        }
    }
}

/// Calls `$kernel::<rows, $v>(&t, c)` for the tile's height.
macro_rules! dispatch_rows {
    ($kernel:ident, $v:literal, $t:expr, $c:expr, $($mr:literal)*) => {
        match $t.rows {
            // SAFETY: the caller asserted the CPU features the kernel needs,
            // and Tile::check that a, panel, the start and c cover every element
            // the tile reads or writes; c is borrowed mutably, so it aliases
            // none of the inputs.
            $($mr => unsafe { $kernel::<$mr, $v>(&$t, $c) },)*
            _ => unreachable!(),
        }
    };
}

/// Calls `$kernel::<rows, nv>(&t, c)` for the tile's height and `nv`.
macro_rules! dispatch {
    ($kernel:ident, $nv:expr, $t:expr, $c:expr) => {
        match $nv {
            1 => dispatch_rows!($kernel, 1, $t, $c, 1 2 3 4 5 6 7 8 9 10 11 12),
            2 => dispatch_rows!($kernel, 2, $t, $c, 1 2 3 4 5 6 7 8 9 10 11 12 13 14),
            _ => dispatch_rows!($kernel, 3, $t, $c, 1 2 3 4 5 6 7 8),
        }
    };
}

/// The body of a tile kernel `fn<const R, const NV>(t: &Tile<P>, c)`: the
/// accumulators started, `$kloop` over K, the results stored. A macro
/// rather than a function, so that each kernel keeps its own target
/// features and its K loop inlines into it.
macro_rules! tile_body {
    ($kloop:ident, $t:expr, $c:expr) => {{
        use $crate::backend::cpu::simd::{col_masks, start_acc, store_acc};
        let (t, c) = ($t, $c);
        let masks = col_masks::<NV>(t.cols);
        let cp = c.as_mut_ptr().add(t.c_off);
        let acc = start_acc::<R, NV>(t.start, &masks, cp, t.ldc);
        let a = t.a.as_ptr().add(t.a_off);
        let acc = $kloop::<R, NV>(acc, a, t.a_ks, t.panel.as_ptr(), t.kc);
        store_acc::<R, NV>(&acc, t.gelu, &masks, cp, t.ldc);
    }};
}

pub(super) use {dispatch, dispatch_rows, tile_body};

/// Runs one f32 tile with `nv` vectors per row (panel width `16 * nv`) on
/// AVX-512. Needs [`features`]`().avx512`.
pub fn tile_f32(nv: usize, t: Tile, c: &mut [f32]) {
    assert!(features().avx512, "tile_f32 needs AVX-512");
    t.check(nv, 1, c.len());
    #[cfg(target_arch = "x86_64")]
    dispatch!(f32_tile, nv, t, c)
}

#[cfg(target_arch = "x86_64")]
pub(super) fn col_masks<const NV: usize>(cols: usize) -> [__mmask16; NV] {
    std::array::from_fn(|v| {
        let n = cols.saturating_sub(v * LANES).min(LANES);
        ((1u32 << n) - 1) as __mmask16
    })
}

/// A tile's accumulators as `start` says: zero, the bias in every row, or
/// the current rows of C or of `src` (masked past `cols`).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn start_acc<const R: usize, const NV: usize>(
    start: Start,
    masks: &[__mmask16; NV],
    cp: *const f32,
    ldc: usize,
) -> [[__m512; NV]; R] {
    let mut acc = [[_mm512_setzero_ps(); NV]; R];
    match start {
        Start::Zero => {}
        Start::Bias(bias) => {
            for v in 0..NV {
                let bv = _mm512_loadu_ps(bias.as_ptr().add(v * LANES));
                for row in acc.iter_mut() {
                    row[v] = bv;
                }
            }
        }
        Start::Accumulate => {
            for (r, row) in acc.iter_mut().enumerate() {
                for v in 0..NV {
                    row[v] = loadk(masks[v], cp.add(r * ldc + v * LANES));
                }
            }
        }
        Start::From { src, ld } => {
            for (r, row) in acc.iter_mut().enumerate() {
                for v in 0..NV {
                    row[v] = loadk(masks[v], src.as_ptr().add(r * ld + v * LANES));
                }
            }
        }
    }
    acc
}

/// Stores a tile's accumulators into C (masked past `cols`), through GELU
/// when asked.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn store_acc<const R: usize, const NV: usize>(
    acc: &[[__m512; NV]; R],
    gelu: bool,
    masks: &[__mmask16; NV],
    cp: *mut f32,
    ldc: usize,
) {
    for (r, row) in acc.iter().enumerate() {
        for v in 0..NV {
            let y = if gelu { gelu_ps(row[v]) } else { row[v] };
            storek(cp.add(r * ldc + v * LANES), masks[v], y);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn f32_tile<const R: usize, const NV: usize>(t: &Tile, c: &mut [f32]) {
    tile_body!(f32_kloop, t, c)
}

/// The tile's K loop, apart so that its accumulators live in registers.
/// Index loops on purpose: with iterators LLVM kept the accumulators in
/// memory and stored them every k.
#[allow(clippy::needless_range_loop)]
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn f32_kloop<const R: usize, const NV: usize>(
    mut acc: [[__m512; NV]; R],
    a: *const f32,
    aks: usize,
    b: *const f32,
    kc: usize,
) -> [[__m512; NV]; R] {
    for k0 in (0..kc).step_by(LANES) {
        let blk = a.add(k0 * aks);
        for kk in 0..LANES.min(kc - k0) {
            let bk = b.add((k0 + kk) * NV * LANES);
            // Prefetch hints (they never fault, hence wrapping arithmetic):
            // the panel rows 16 k ahead, and one row of A's next block.
            for v in 0..NV {
                _mm_prefetch::<_MM_HINT_T0>(bk.wrapping_add((16 * NV + v) * LANES).cast());
            }
            _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add((LANES * aks) + kk * LANES).cast());
            let mut bv = [_mm512_setzero_ps(); NV];
            for v in 0..NV {
                bv[v] = _mm512_loadu_ps(bk.add(v * LANES));
            }
            let ak = blk.add(kk);
            for r in 0..R {
                let av = _mm512_set1_ps(*ak.add(r * LANES));
                for v in 0..NV {
                    acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
                }
            }
        }
    }
    acc
}

/// The bf16 tile: the panel holds `kc.div_ceil(2)` rows of `16 * nv` bf16
/// pairs `(w[2i, j], w[2i+1, j])` as u32, A f32 values that are bf16
/// already (rounded by [`round_to_bf16`] as A is packed). Each pair is
/// widened to two f32 registers (a shift, a mask) and multiplied by FMAs: a product of two
/// bf16 is exact in f32, so this is `vdpbf16ps`'s arithmetic (f32
/// accumulation of exact products) at the FMA ports' rate, where
/// `vdpbf16ps` issues at half of it on Sapphire Rapids (0.45 per cycle
/// against 2 FMAs, measured). Needs AVX-512.
pub fn tile_bf16(nv: usize, t: Tile<u32>, c: &mut [f32]) {
    assert!(features().avx512, "tile_bf16 needs AVX-512");
    t.check(nv, 2, c.len());
    #[cfg(target_arch = "x86_64")]
    dispatch!(bf16_tile, nv, t, c)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn bf16_tile<const R: usize, const NV: usize>(t: &Tile<u32>, c: &mut [f32]) {
    tile_body!(bf16_kloop, t, c)
}

/// The bf16 tile's K loop, apart as [`f32_kloop`]: per pair row of the
/// panel, the even k's then the odd k's FMAs (an odd `kc`'s last row has
/// only its even half).
#[allow(clippy::needless_range_loop)]
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn bf16_kloop<const R: usize, const NV: usize>(
    mut acc: [[__m512; NV]; R],
    a: *const f32,
    aks: usize,
    b: *const u32,
    kc: usize,
) -> [[__m512; NV]; R] {
    let high = _mm512_set1_epi32(0xffff_0000u32 as i32);
    for k0 in (0..kc).step_by(LANES) {
        let blk = a.add(k0 * aks);
        for kk in (0..LANES.min(kc - k0)).step_by(2) {
            let k = k0 + kk;
            let bk = b.add(k / 2 * NV * LANES);
            for v in 0..NV {
                _mm_prefetch::<_MM_HINT_T0>(bk.wrapping_add((8 * NV + v) * LANES).cast());
            }
            _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add((LANES * aks) + kk * LANES).cast());
            let mut bv = [_mm512_setzero_ps(); NV];
            for v in 0..NV {
                let pairs = _mm512_loadu_si512(bk.add(v * LANES).cast());
                bv[v] = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(pairs));
            }
            let ak = blk.add(kk);
            for r in 0..R {
                let av = _mm512_set1_ps(*ak.add(r * LANES));
                for v in 0..NV {
                    acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
                }
            }
            if k + 1 == kc {
                break;
            }
            for v in 0..NV {
                let pairs = _mm512_loadu_si512(bk.add(v * LANES).cast());
                bv[v] = _mm512_castsi512_ps(_mm512_and_si512(pairs, high));
            }
            let ak = ak.add(1);
            for r in 0..R {
                let av = _mm512_set1_ps(*ak.add(r * LANES));
                for v in 0..NV {
                    acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
                }
            }
        }
    }
    acc
}

/// e^x per lane: x = n ln2 + r with |r| <= ln2/2, e^r by its Taylor series to
/// r^7 (relative error < 1e-8 before rounding), then scaled by 2^n (vscalefps
/// handles underflow to 0 for x below about -104).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn exp_ps(x: __m512) -> __m512 {
    let x = _mm512_max_ps(x, _mm512_set1_ps(-104.0));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
    );
    // ln 2 split in two so n * ln2_hi is exact for |n| < 2^8.
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_145_75), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428_606_8e-6), r);
    let mut p = _mm512_set1_ps(1.0 / 5040.0);
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    _mm512_scalef_ps(p, n)
}

/// GELU (erf form) per lane from g = |x| Phi(-|x|): -g for x < 0 and
/// x - g for x >= 0, so both sides keep their relative precision. Phi (the
/// normal CDF) on [-6, 0) comes from a table of quartics (`gelu_table.rs`,
/// fitted by scripts/fit_gelu_table.py): 16 intervals of 0.375, the
/// coefficients picked with `vpermps`; below -6, g is 0 (|GELU(-6)| =
/// 6e-9). A short dependency chain (one conversion, four FMAs), where an
/// erfc through exp was ~140 cycles deep and bound GELU's throughput.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn gelu_ps(x: __m512) -> __m512 {
    use super::gelu_table::GELU_PHI;
    const LO: f32 = -6.0;
    const WIDTH: f32 = 0.375;
    let neg = _mm512_sub_ps(_mm512_setzero_ps(), _mm512_abs_ps(x));
    let xc = _mm512_max_ps(neg, _mm512_set1_ps(LO));
    let u = _mm512_mul_ps(
        _mm512_sub_ps(xc, _mm512_set1_ps(LO)),
        _mm512_set1_ps(1.0 / WIDTH),
    );
    // Truncation is floor here (u >= 0); x = 0 would be interval 16.
    let idx = _mm512_min_epi32(_mm512_cvttps_epi32(u), _mm512_set1_epi32(15));
    let centre = _mm512_fmadd_ps(
        _mm512_cvtepi32_ps(idx),
        _mm512_set1_ps(WIDTH),
        _mm512_set1_ps(LO + WIDTH / 2.0),
    );
    let t = _mm512_sub_ps(xc, centre);
    let coef = |d: usize| _mm512_permutexvar_ps(idx, _mm512_loadu_ps(GELU_PHI[d].as_ptr()));
    let mut phi = coef(4);
    for d in (0..4).rev() {
        phi = _mm512_fmadd_ps(phi, t, coef(d));
    }
    let far = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(neg, _mm512_set1_ps(LO));
    let g = _mm512_maskz_mul_ps(!far, _mm512_abs_ps(x), phi);
    let positive = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, _mm512_setzero_ps());
    _mm512_mask_sub_ps(_mm512_sub_ps(_mm512_setzero_ps(), g), positive, x, g)
}

/// GELU over a slice with the vector code (for tests and the non-fused
/// fallback). Needs AVX-512.
pub fn gelu_slice(x: &mut [f32]) {
    assert!(features().avx512, "gelu_slice needs AVX-512");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512 present (asserted); the body only touches x's elements,
    // the tail through a mask.
    unsafe {
        gelu_slice_avx512(x)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gelu_slice_avx512(x: &mut [f32]) {
    for chunk in x.chunks_mut(LANES) {
        let m = ((1u32 << chunk.len()) - 1) as __mmask16;
        let p = chunk.as_mut_ptr();
        storek(p, m, gelu_ps(loadk(m, p)));
    }
}

/// Asks for the cache lines of `data` ahead of their use: a hint, with no
/// effect on any result.
pub fn prefetch(data: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in data.chunks(LANES) {
        // SAFETY: a prefetch never faults and writes nothing; the address is
        // inside `data`.
        #[allow(unused_unsafe)]
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast())
        }
    }
}

/// A whole vector's mask.
#[cfg(target_arch = "x86_64")]
const FULL: __mmask16 = 0xffff;

/// Loads the lanes of `k` (zeros elsewhere). Whole vectors take a plain
/// load: a masked load cannot take its data from a store still in flight
/// (the row just written by a tile or a previous pass), and stalls until the
/// store reaches the cache.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn loadk(k: __mmask16, p: *const f32) -> __m512 {
    if k == FULL {
        _mm512_loadu_ps(p)
    } else {
        _mm512_maskz_loadu_ps(k, p)
    }
}

/// Stores the lanes of `k`, plainly for a whole vector (see [`loadk`]).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn storek(p: *mut f32, k: __mmask16, v: __m512) {
    if k == FULL {
        _mm512_storeu_ps(p, v)
    } else {
        _mm512_mask_storeu_ps(p, k, v)
    }
}

/// Softmax of `row * scale` in place, with the vector exp. Needs AVX-512.
pub fn softmax_scaled(row: &mut [f32], scale: f32) {
    assert!(features().avx512, "softmax_scaled needs AVX-512");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512 present (asserted); only row's elements are touched,
    // tails through masks.
    unsafe {
        softmax_avx512(row, scale)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn softmax_avx512(row: &mut [f32], scale: f32) {
    let mask = |n: usize| ((1u32 << n) - 1) as __mmask16;
    let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
    for ch in row.chunks(LANES) {
        let k = mask(ch.len());
        let v = if k == FULL {
            _mm512_loadu_ps(ch.as_ptr())
        } else {
            _mm512_mask_loadu_ps(m, k, ch.as_ptr())
        };
        m = _mm512_max_ps(m, v);
    }
    let max = _mm512_set1_ps(_mm512_reduce_max_ps(m));
    let sc = _mm512_set1_ps(scale);
    let mut sum = _mm512_setzero_ps();
    for ch in row.chunks_mut(LANES) {
        let k = mask(ch.len());
        let p = ch.as_mut_ptr();
        let e = exp_ps(_mm512_mul_ps(_mm512_sub_ps(loadk(k, p), max), sc));
        let e = _mm512_maskz_mov_ps(k, e);
        sum = _mm512_add_ps(sum, e);
        storek(p, k, e);
    }
    let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(sum));
    for ch in row.chunks_mut(LANES) {
        let k = mask(ch.len());
        let p = ch.as_mut_ptr();
        storek(p, k, _mm512_mul_ps(loadk(k, p), inv));
    }
}

/// In place: row = LN(row + bias + residual) * gamma + beta (bias and residual
/// optional), mean and variance in f32 over 16 lanes. Needs AVX-512.
pub fn residual_layernorm(
    row: &mut [f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) {
    assert!(features().avx512, "residual_layernorm needs AVX-512");
    let w = row.len();
    assert!(
        gamma.len() == w && beta.len() == w,
        "layernorm: gamma/beta are not {w} wide"
    );
    assert!(bias.is_none_or(|b| b.len() == w) && residual.is_none_or(|r| r.len() == w));
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512 present (asserted); every slice is w long (asserted),
    // and only its first w elements are touched, tails through masks.
    unsafe {
        residual_layernorm_avx512(row, bias, residual, gamma, beta, eps)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn residual_layernorm_avx512(
    row: &mut [f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) {
    let w = row.len();
    let p = row.as_mut_ptr();
    let mut sum = _mm512_setzero_ps();
    let mut i = 0;
    while i < w {
        let k = ((1u32 << (w - i).min(LANES)) - 1) as __mmask16;
        let mut v = loadk(k, p.add(i));
        if let Some(b) = bias {
            v = _mm512_add_ps(v, loadk(k, b.as_ptr().add(i)));
        }
        if let Some(r) = residual {
            v = _mm512_add_ps(v, loadk(k, r.as_ptr().add(i)));
        }
        storek(p.add(i), k, v);
        sum = _mm512_add_ps(sum, v);
        i += LANES;
    }
    let mean = _mm512_reduce_add_ps(sum) / w as f32;
    let mv = _mm512_set1_ps(mean);
    let mut sq = _mm512_setzero_ps();
    i = 0;
    while i < w {
        let k = ((1u32 << (w - i).min(LANES)) - 1) as __mmask16;
        let d = _mm512_maskz_sub_ps(k, loadk(k, p.add(i)), mv);
        sq = _mm512_fmadd_ps(d, d, sq);
        i += LANES;
    }
    let inv = 1.0 / (_mm512_reduce_add_ps(sq) / w as f32 + eps).sqrt();
    let iv = _mm512_set1_ps(inv);
    i = 0;
    while i < w {
        let k = ((1u32 << (w - i).min(LANES)) - 1) as __mmask16;
        let x = loadk(k, p.add(i));
        let g = loadk(k, gamma.as_ptr().add(i));
        let b = loadk(k, beta.as_ptr().add(i));
        let y = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_sub_ps(x, mv), iv), g, b);
        storek(p.add(i), k, y);
        i += LANES;
    }
}

/// Rows of `k` f32 into rows of `k.div_ceil(2)` bf16 pairs (round to
/// nearest even; an odd row's last pair padded with 0). Needs AVX512-BF16.
pub fn to_bf16_pairs(src: &[f32], k: usize, dst: &mut [u32]) {
    assert!(features().avx512_bf16, "to_bf16_pairs needs AVX512-BF16");
    let kp = k.div_ceil(2);
    assert!(k > 0 && src.len().is_multiple_of(k) && dst.len() == src.len() / k * kp);
    for (s, d) in src.chunks(k).zip(dst.chunks_mut(kp)) {
        let d16: &mut [u16] = bytemuck::cast_slice_mut(d);
        d16[k..].fill(0);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX512-BF16 present (asserted); s and d16[..k] are both k
        // long, touched 16 at a time with masks on the tail.
        unsafe {
            f32_to_bf16_avx512(s, &mut d16[..k])
        }
    }
}

/// Rows `rows` of `src` (rows `w` apart, `w` a multiple of 32) as bf16
/// pairs (round to nearest even, as [`to_bf16_pairs`]), after `+ bias` and
/// GELU when `gelu_bias` is given: pairs `j..j + 16` of row `r` go to
/// `dst[at(r, j)..]`. One pass with the values in registers: how a finished
/// AMX block, or a row another op just wrote, becomes the next linear's A
/// without an f32 copy or a call per 16 values. Needs AVX512-BF16.
pub fn rows_to_pairs(
    src: &[f32],
    w: usize,
    rows: std::ops::Range<usize>,
    gelu_bias: Option<&[f32]>,
    dst: &mut [u32],
    at: impl Fn(usize, usize) -> usize,
) {
    assert!(features().avx512_bf16, "rows_to_pairs needs AVX512-BF16");
    assert!(w.is_multiple_of(2 * LANES) && src.len() >= rows.end * w);
    assert!(gelu_bias.is_none_or(|b| b.len() >= w));
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX512-BF16 present (asserted); each row's `w` values lie in
    // src and the bias covers `w` (asserted); the stores go through a
    // bounds-checked slice of dst.
    unsafe {
        rows_to_pairs_avx512(src, w, rows, gelu_bias, dst, at)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn rows_to_pairs_avx512(
    src: &[f32],
    w: usize,
    rows: std::ops::Range<usize>,
    gelu_bias: Option<&[f32]>,
    dst: &mut [u32],
    at: impl Fn(usize, usize) -> usize,
) {
    for r in rows {
        let row = src.as_ptr().add(r * w);
        for c in (0..w).step_by(2 * LANES) {
            let mut lo = _mm512_loadu_ps(row.add(c));
            let mut hi = _mm512_loadu_ps(row.add(c + LANES));
            if let Some(b) = gelu_bias {
                lo = gelu_ps(_mm512_add_ps(lo, _mm512_loadu_ps(b.as_ptr().add(c))));
                hi = gelu_ps(_mm512_add_ps(
                    hi,
                    _mm512_loadu_ps(b.as_ptr().add(c + LANES)),
                ));
            }
            // Lanes 0-15 of the result come from the second operand: in
            // memory order, value c + i is bf16 i, so pair j holds c + 2j
            // and c + 2j + 1, as to_bf16_pairs packs them.
            let v = _mm512_cvtne2ps_pbh(hi, lo);
            let j = at(r, c / 2);
            let d = &mut dst[j..j + LANES];
            _mm512_storeu_si512(
                d.as_mut_ptr().cast(),
                std::mem::transmute::<__m512bh, __m512i>(v),
            );
        }
    }
}

/// Each value rounded in place to the nearest bf16 (ties to even), kept as
/// f32: what [`tile_bf16`] reads as A. Needs AVX512-BF16.
pub fn round_to_bf16(x: &mut [f32]) {
    assert!(features().avx512_bf16, "round_to_bf16 needs AVX512-BF16");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX512-BF16 present (asserted); x is touched 16 at a time, the
    // tail through masks.
    unsafe {
        round_to_bf16_avx512(x)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn round_to_bf16_avx512(x: &mut [f32]) {
    for c in x.chunks_mut(LANES) {
        let m = ((1u32 << c.len()) - 1) as __mmask16;
        let h = std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(loadk(m, c.as_ptr())));
        let wide = _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h));
        storek(c.as_mut_ptr(), m, _mm512_castsi512_ps(wide));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn f32_to_bf16_avx512(s: &[f32], d: &mut [u16]) {
    for (sc, dc) in s.chunks(LANES).zip(d.chunks_mut(LANES)) {
        let m = ((1u32 << sc.len()) - 1) as __mmask16;
        let v = loadk(m, sc.as_ptr());
        let h = std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(v));
        if m == FULL {
            _mm256_storeu_si256(dc.as_mut_ptr().cast(), h);
        } else {
            _mm256_mask_storeu_epi16(dc.as_mut_ptr().cast(), m, h);
        }
    }
}

/// bf16 pairs of two rows, `out[j] = bf16(lo[j]) | bf16(hi[j]) << 16`
/// (round to nearest even, as [`to_bf16_pairs`]): how a K block's two
/// consecutive rows are packed. Needs AVX512-BF16.
pub fn bf16_pairs_of_rows(lo: &[f32], hi: &[f32], out: &mut [u32]) {
    assert!(
        features().avx512_bf16,
        "bf16_pairs_of_rows needs AVX512-BF16"
    );
    assert!(lo.len() == out.len() && hi.len() == out.len());
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX512-BF16 present (asserted); lo, hi and out have the same
    // length (asserted), touched 16 at a time with masks on the tail.
    unsafe {
        bf16_pairs_avx512(lo, hi, out)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn bf16_pairs_avx512(lo: &[f32], hi: &[f32], out: &mut [u32]) {
    for ((l, h), o) in lo
        .chunks(LANES)
        .zip(hi.chunks(LANES))
        .zip(out.chunks_mut(LANES))
    {
        let m = ((1u32 << l.len()) - 1) as __mmask16;
        let bits = |p: *const f32| {
            let b = _mm512_cvtneps_pbh(loadk(m, p));
            _mm512_cvtepu16_epi32(std::mem::transmute::<__m256bh, __m256i>(b))
        };
        let pair = _mm512_or_si512(bits(l.as_ptr()), _mm512_slli_epi32::<16>(bits(h.as_ptr())));
        if m == FULL {
            _mm512_storeu_si512(o.as_mut_ptr().cast(), pair);
        } else {
            _mm512_mask_storeu_epi32(o.as_mut_ptr().cast(), m, pair);
        }
    }
}

/// In place on a block of `rows` x `cols` at `off` (rows `ld` apart):
/// c += bias[j], then GELU when asked. Needs AVX-512.
pub fn bias_gelu_block(
    c: &mut [f32],
    off: usize,
    ld: usize,
    rows: usize,
    cols: usize,
    bias: &[f32],
    gelu: bool,
) {
    assert!(features().avx512, "bias_gelu_block needs AVX-512");
    assert!(bias.len() >= cols);
    assert_rows("bias block", c.len(), off, ld, rows, cols);
    for r in 0..rows {
        let row = &mut c[off + r * ld..][..cols];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX-512 present (asserted); row and bias hold cols values
        // (asserted), touched 16 at a time with masked tails.
        unsafe {
            bias_gelu_row(row, &bias[..cols], gelu)
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn bias_gelu_row(row: &mut [f32], bias: &[f32], gelu: bool) {
    for (ch, b) in row.chunks_mut(LANES).zip(bias.chunks(LANES)) {
        let m = ((1u32 << ch.len()) - 1) as __mmask16;
        let p = ch.as_mut_ptr();
        let v = _mm512_add_ps(loadk(m, p), loadk(m, b.as_ptr()));
        storek(p, m, if gelu { gelu_ps(v) } else { v });
    }
}

/// This thread's f32 FMA rate in GFLOP/s, measured: 24 independent FMA
/// chains (enough to cover the FMA latency on both ports) for `iters`
/// rounds. It is how the benches get the peak they quote fractions of:
/// lanes x 2 flops x FMAs per cycle x the clock actually sustained.
pub fn fma_peak_gflops(iters: usize) -> f64 {
    assert!(features().avx512, "fma_peak_gflops needs AVX-512");
    let t = std::time::Instant::now();
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512 present (asserted); registers only, no memory.
    let r = unsafe { fma_chains(iters) };
    #[cfg(not(target_arch = "x86_64"))]
    let r = 0.0;
    std::hint::black_box(r);
    (iters * 24 * LANES * 2) as f64 / t.elapsed().as_secs_f64() / 1e9
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_chains(iters: usize) -> f32 {
    let mut acc = [_mm512_set1_ps(0.0); 24];
    let (b, c) = (_mm512_set1_ps(1.000_000_1), _mm512_set1_ps(0.999_999_9));
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = _mm512_fmadd_ps(*a, b, c);
        }
    }
    let mut s = _mm512_setzero_ps();
    for a in acc {
        s = _mm512_add_ps(s, a);
    }
    _mm512_reduce_add_ps(s)
}

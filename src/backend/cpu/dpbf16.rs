//! The bf16 register tile on `vdpbf16ps`: one instruction multiplies a pair
//! of k per lane and adds both products to an f32 accumulator. Where it
//! issues at the FMA rate (AMD's cores) the tile does twice the f32 tile's
//! work per instruction and reads half its bytes of A and B; on Intel's it
//! issues at half that rate, so `simd::tile_bf16` (pairs widened for the
//! FMAs) serves there. A SIMD module, hence its `unsafe`.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use super::simd::{dispatch, dispatch_rows, tile_body};
use super::simd::{features, Tile, LANES};
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// A packed A (f32, 16-value row pieces: [`super::simd::a_index`]) made into what
/// [`tile_dpbf16`] reads: each pair `(x[2i], x[2i+1])` rounded to bf16
/// (nearest, ties to even) as one u32 in `x[2i]`, the even k in the low
/// half; `x[2i+1]` zeroed. `x` starts a packed block (an even index).
/// Needs AVX512-BF16.
pub fn pairs_in_place(x: &mut [f32]) {
    assert!(features().avx512_bf16, "pairs_in_place needs AVX512-BF16");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX512-BF16 present (asserted); x is read and written 16
    // values at a time, the tail through masks.
    unsafe {
        pairs_in_place_avx512(x)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn pairs_in_place_avx512(x: &mut [f32]) {
    for c in x.chunks_mut(LANES) {
        let m = ((1u32 << c.len()) - 1) as __mmask16;
        let v = _mm512_maskz_loadu_ps(m, c.as_ptr());
        // 16 bf16 in order: as u32, word j is the pair (2j, 2j+1).
        let h = std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(v));
        let spread = _mm512_maskz_expand_epi32(0x5555, _mm512_castsi256_si512(h));
        _mm512_mask_storeu_ps(c.as_mut_ptr(), m, _mm512_castsi512_ps(spread));
    }
}

/// One tile as [`super::simd::tile_f32`] does, on bf16: the panel holds `kc / 2`
/// rows of `16 * nv` bf16 pairs as u32 (`Packed::bf16`), A is packed as
/// for the f32 tile and then made pairs by [`pairs_in_place`]. `kc` even:
/// an odd one's last pair would multiply a value past A's end by the
/// panel's zero. Needs AVX512-BF16.
pub fn tile_dpbf16(nv: usize, t: Tile<u32>, c: &mut [f32]) {
    assert!(features().avx512_bf16, "tile_dpbf16 needs AVX512-BF16");
    assert!(t.kc.is_multiple_of(2), "tile_dpbf16: odd K block {}", t.kc);
    t.check(nv, 2, c.len());
    #[cfg(target_arch = "x86_64")]
    dispatch!(dp_tile, nv, t, c)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn dp_tile<const R: usize, const NV: usize>(t: &Tile<u32>, c: &mut [f32]) {
    tile_body!(dp_kloop, t, c)
}

/// The K loop, apart so that its accumulators live in registers (as
/// `simd`'s): per pair row of the panel, one broadcast pair per tile row.
#[allow(clippy::needless_range_loop)]
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn dp_kloop<const R: usize, const NV: usize>(
    mut acc: [[__m512; NV]; R],
    a: *const f32,
    aks: usize,
    b: *const u32,
    kc: usize,
) -> [[__m512; NV]; R] {
    for k0 in (0..kc).step_by(LANES) {
        let blk = a.add(k0 * aks);
        for kk in (0..LANES.min(kc - k0)).step_by(2) {
            let bk = b.add((k0 + kk) / 2 * NV * LANES);
            // Hints only (never fault): the panel 16 k ahead, and the two
            // lines of A's next block that this step's two k stand for.
            for v in 0..NV {
                _mm_prefetch::<_MM_HINT_T0>(bk.wrapping_add((8 * NV + v) * LANES).cast());
            }
            let next = blk.wrapping_add(LANES * aks + kk * LANES);
            _mm_prefetch::<_MM_HINT_T0>(next.cast());
            _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(LANES).cast());
            let mut bv = [_mm512_setzero_si512(); NV];
            for v in 0..NV {
                bv[v] = _mm512_loadu_si512(bk.add(v * LANES).cast());
            }
            let ak = blk.add(kk).cast::<i32>();
            for r in 0..R {
                let av = _mm512_set1_epi32(*ak.add(r * LANES));
                for v in 0..NV {
                    acc[r][v] = _mm512_dpbf16_ps(
                        acc[r][v],
                        std::mem::transmute::<__m512i, __m512bh>(av),
                        std::mem::transmute::<__m512i, __m512bh>(bv[v]),
                    );
                }
            }
        }
    }
    acc
}

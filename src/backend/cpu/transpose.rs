//! A SIMD module for packing: rows of A into the 16-k blocks the register
//! tiles read (`super::simd::a_index`), and transposed sources (nn.Linear weights,
//! K^T) into k-major panels, 16 x 16 at a time in registers. The scalar
//! transpose these replace cost about two cycles per element, more than the
//! product itself for the attention's P V (K = the sequence, N = 64).
#![allow(unsafe_code)]

use super::simd::{features, LANES};
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Whether rows `r < rows` of `cols` values at `off + r * ld` lie in `len`.
fn rows_fit(len: usize, off: usize, ld: usize, rows: usize, cols: usize) -> bool {
    let end = (rows.max(1) - 1)
        .checked_mul(ld)
        .and_then(|x| x.checked_add(off)?.checked_add(cols));
    end.is_some_and(|e| e <= len)
}

/// `rows` rows of `cols` values from `src` (row `r` at `off + r * lds`) to
/// `dst` (row `r` at `r * ldd`), in vector moves: what a call to memmove
/// per short row cost showed in profiles (V's rows into panels).
pub fn copy_rows(
    src: &[f32],
    off: usize,
    lds: usize,
    rows: usize,
    cols: usize,
    dst: &mut [f32],
    ldd: usize,
) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(
        rows_fit(src.len(), off, lds, rows, cols) && rows_fit(dst.len(), 0, ldd, rows, cols),
        "copy_rows: {rows} x {cols} from {off} (stride {lds}) of {} into stride {ldd} of {}",
        src.len(),
        dst.len()
    );
    #[cfg(target_arch = "x86_64")]
    if features().avx512 {
        // SAFETY: AVX-512 present; rows r < rows, columns < cols of both
        // lie inside them (asserted above); the tails are masked off.
        unsafe {
            copy_rows_avx512(
                src.as_ptr().add(off),
                lds,
                rows,
                cols,
                dst.as_mut_ptr(),
                ldd,
            )
        };
        return;
    }
    for r in 0..rows {
        dst[r * ldd..][..cols].copy_from_slice(&src[off + r * lds..][..cols]);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn copy_rows_avx512(
    src: *const f32,
    lds: usize,
    rows: usize,
    cols: usize,
    dst: *mut f32,
    ldd: usize,
) {
    for r in 0..rows {
        let (s, d) = (src.add(r * lds), dst.add(r * ldd));
        for j in (0..cols).step_by(LANES) {
            let n = LANES.min(cols - j);
            // Whole pieces take plain moves: a masked load cannot be fed by
            // the stores that just wrote the row (softmax's, a tile's).
            if n == LANES {
                _mm512_storeu_ps(d.add(j), _mm512_loadu_ps(s.add(j)));
            } else {
                let m = ((1u32 << n) - 1) as __mmask16;
                _mm512_mask_storeu_ps(d.add(j), m, _mm512_maskz_loadu_ps(m, s.add(j)));
            }
        }
    }
}

/// Writes `rows` rows of `kc` values of `a` (row `r` at `off + r * lda`)
/// into `tile` in 16-k blocks of `ks` rows: element (r, k) at
/// `simd::a_index(r, k, ks)`, each block's row pieces 16 apart. Only those
/// elements are written.
pub fn rows_to_k_blocks(
    a: &[f32],
    off: usize,
    lda: usize,
    rows: usize,
    kc: usize,
    ks: usize,
    tile: &mut [f32],
) {
    assert!(
        (1..=ks).contains(&rows) && kc > 0,
        "k blocks: {rows} rows of {kc} in blocks of {ks} rows"
    );
    for k0 in (0..kc).step_by(LANES) {
        let kn = LANES.min(kc - k0);
        copy_rows(a, off + k0, lda, rows, kn, &mut tile[k0 * ks..], LANES);
    }
}

/// Writes `rows` rows of `kc` values of `a` (row `r` at `off + r * lda`)
/// into `tile` k-major: element (r, k) at `k * ks + r`, rows `rows..mr`
/// zero, nothing else written. `mr <= 16` and `mr <= ks`: A tiles have
/// `ks = mr`; a panel of weights or K^T is written 16 columns at a time
/// with `ks` its width.
#[allow(clippy::too_many_arguments)]
pub fn rows_to_k_major(
    a: &[f32],
    off: usize,
    lda: usize,
    rows: usize,
    kc: usize,
    mr: usize,
    ks: usize,
    tile: &mut [f32],
) {
    assert!(
        (1..=LANES).contains(&mr) && (1..=mr).contains(&rows) && kc > 0 && mr <= ks,
        "k-major tile: {rows} rows of {kc} into {mr} lanes {ks} apart"
    );
    assert!(
        rows_fit(a.len(), off, lda, rows, kc) && tile.len() >= (kc - 1) * ks + mr,
        "k-major tile: {rows} rows of {kc} at {off} (stride {lda}) from {} values into {}",
        a.len(),
        tile.len()
    );
    #[cfg(target_arch = "x86_64")]
    if features().avx512 {
        // SAFETY: AVX-512 present; rows r < rows, k < kc of `a` lie inside it
        // and lanes r < mr of each k at k * ks inside `tile` (both asserted
        // above); every other access is masked off.
        unsafe {
            k_major_avx512(
                a.as_ptr().add(off),
                lda,
                rows,
                kc,
                mr,
                ks,
                tile.as_mut_ptr(),
            )
        };
        return;
    }
    rows_to_k_major_scalar(a, off, lda, rows, kc, mr, ks, tile);
}

/// The plain form of [`rows_to_k_major`]: where AVX-512 is missing, and
/// what the tests check the vector form against.
#[allow(clippy::too_many_arguments)]
pub fn rows_to_k_major_scalar(
    a: &[f32],
    off: usize,
    lda: usize,
    rows: usize,
    kc: usize,
    mr: usize,
    ks: usize,
    tile: &mut [f32],
) {
    for k in 0..kc {
        for (r, d) in tile[k * ks..][..mr].iter_mut().enumerate() {
            *d = if r < rows { a[off + r * lda + k] } else { 0.0 };
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn k_major_avx512(
    a: *const f32,
    lda: usize,
    rows: usize,
    kc: usize,
    mr: usize,
    ks: usize,
    tile: *mut f32,
) {
    let store = ((1u32 << mr) - 1) as __mmask16;
    for k0 in (0..kc).step_by(LANES) {
        let kn = LANES.min(kc - k0);
        let load = ((1u32 << kn) - 1) as __mmask16;
        let mut r = [_mm512_setzero_ps(); LANES];
        for (i, ri) in r.iter_mut().enumerate() {
            // Whole rows take a plain load: a masked one cannot be fed by
            // the stores that just wrote the row (softmax's, a tile's).
            let p = a.wrapping_add(i * lda + k0);
            if i < rows && kn == LANES {
                *ri = _mm512_loadu_ps(p);
            } else if i < rows {
                *ri = _mm512_maskz_loadu_ps(load, p);
            }
        }
        let t = transpose16(r);
        for (kk, tk) in t.iter().enumerate().take(kn) {
            _mm512_mask_storeu_ps(tile.add((k0 + kk) * ks), store, *tk);
        }
    }
}

/// `t[c]` lane `r` = `r[r]` lane `c`: pairs of rows interleaved, then
/// pairs of pairs (each 128-bit lane now holds one column of four rows),
/// then the 128-bit lanes of four such vectors gathered per column.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn transpose16(r: [__m512; LANES]) -> [__m512; LANES] {
    // t[2i] lane j: r[2i][4j], r[2i+1][4j], r[2i][4j+1], r[2i+1][4j+1];
    // t[2i+1] the same for 4j+2 and 4j+3.
    let mut t = [_mm512_setzero_ps(); LANES];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // u[4g + c] lane j: rows 4g..4g+4 of column 4j + c.
    let mut u = [_mm512_setzero_ps(); LANES];
    for g in 0..4 {
        let t = &t[4 * g..4 * g + 4];
        u[4 * g] = _mm512_shuffle_ps::<0x44>(t[0], t[2]);
        u[4 * g + 1] = _mm512_shuffle_ps::<0xee>(t[0], t[2]);
        u[4 * g + 2] = _mm512_shuffle_ps::<0x44>(t[1], t[3]);
        u[4 * g + 3] = _mm512_shuffle_ps::<0xee>(t[1], t[3]);
    }
    // Column 4j + c = lane j of u[c], u[4 + c], u[8 + c], u[12 + c].
    let mut out = [_mm512_setzero_ps(); LANES];
    for c in 0..4 {
        let (a, b, cc, d) = (u[c], u[4 + c], u[8 + c], u[12 + c]);
        let ab_lo = _mm512_shuffle_f32x4::<0x44>(a, b);
        let ab_hi = _mm512_shuffle_f32x4::<0xee>(a, b);
        let cd_lo = _mm512_shuffle_f32x4::<0x44>(cc, d);
        let cd_hi = _mm512_shuffle_f32x4::<0xee>(cc, d);
        out[c] = _mm512_shuffle_f32x4::<0x88>(ab_lo, cd_lo);
        out[4 + c] = _mm512_shuffle_f32x4::<0xdd>(ab_lo, cd_lo);
        out[8 + c] = _mm512_shuffle_f32x4::<0x88>(ab_hi, cd_hi);
        out[12 + c] = _mm512_shuffle_f32x4::<0xdd>(ab_hi, cd_hi);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::simd;

    /// Every shape the packing meets (tile heights 8, 12, 14; short last
    /// tiles; K tails; row strides wider than K; panels wider than the
    /// tile, whose other lanes must stay untouched) equals the scalar form.
    #[test]
    fn the_vector_transpose_equals_the_scalar_one() {
        assert!(features().avx512, "this test checks the AVX-512 form");
        let a: Vec<f32> = (0..40 * 100).map(|i| i as f32 * 0.5 - 7.0).collect();
        for mr in [8, 12, 14, 16] {
            for rows in [1, 2, mr - 1, mr] {
                for kc in [1, 5, 16, 17, 33, 64] {
                    for ((off, lda), ks) in
                        [(0, kc), (3, 100), (101, 64)].into_iter().zip([mr, mr, 48])
                    {
                        let ks = ks.max(mr);
                        let mut want = vec![f32::NAN; kc * ks + 3];
                        let mut got = want.clone();
                        let lda = lda.max(kc);
                        rows_to_k_major_scalar(&a, off, lda, rows, kc, mr, ks, &mut want);
                        rows_to_k_major(&a, off, lda, rows, kc, mr, ks, &mut got);
                        assert_eq!(
                            got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                            want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                            "mr {mr}, rows {rows}, kc {kc}, off {off}, lda {lda}, ks {ks}"
                        );
                    }
                }
            }
        }
    }

    /// The 16-k blocks hold each element where `a_index` says and write
    /// nothing else (K tails, short tiles, strides wider than K).
    #[test]
    fn k_blocks_put_each_value_where_a_index_says() {
        assert!(features().avx512, "this test checks the AVX-512 form");
        let a: Vec<f32> = (0..40 * 100).map(|i| i as f32 * 0.5 - 7.0).collect();
        for ks in [8, 12, 14] {
            for rows in [1, ks - 1, ks] {
                for kc in [1usize, 15, 16, 17, 40, 64] {
                    for (off, lda) in [(0, kc), (3, 100)] {
                        let len = ks * kc.next_multiple_of(LANES);
                        let mut want = vec![f32::NAN; len];
                        for r in 0..rows {
                            for k in 0..kc {
                                want[simd::a_index(r, k, ks)] = a[off + r * lda + k];
                            }
                        }
                        let mut got = vec![f32::NAN; len];
                        rows_to_k_blocks(&a, off, lda, rows, kc, ks, &mut got);
                        assert_eq!(
                            got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                            want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                            "ks {ks}, rows {rows}, kc {kc}, off {off}"
                        );
                    }
                }
            }
        }
    }
}

//! Multi-head self-attention over packed sequences on AMX tiles, for
//! `--dtype bf16`: per (sequence, head) Q, K and V rounded to bf16 once,
//! then per block of 32 queries S = Q K^T on the tiles (f32), softmax in
//! f32, P rounded to bf16 (as flash-attention rounds P to the input type)
//! and O = P V on the tiles. Lengths are padded to 32 inside: padded keys
//! get probability 0 and padded queries are dropped, so a sequence's output
//! does not depend on its neighbours.

use super::amx::{self, a_tile_index, Tiles, PAIRS};
use super::lines::Lines;
use super::ops;
use super::simd;
use super::transpose;

/// Rows of one AMX block: queries per block, keys per panel.
const BLOCK: usize = 2 * amx::TILE;

/// Whether a head size runs here: whole 32-wide K steps for Q K^T and
/// whole 32-column panels for P V.
pub fn fits(head_dim: usize) -> bool {
    head_dim > 0 && head_dim.is_multiple_of(BLOCK)
}

/// `out [T, heads * d] = attention(q, k, v)` with `qkv [T, 3 * heads * d]`
/// as [`ops::attention_packed`] reads it, rounded to bf16 first. Needs
/// [`amx::available`] and [`fits`]`(d)`.
pub fn attention(qkv: &[f32], cu_seqlens: &[usize], heads: usize, d: usize, out: &mut [f32]) {
    let w = 3 * heads * d;
    let mut pairs = vec![0u32; qkv.len() / 2];
    simd::to_bf16_pairs(qkv, w, &mut pairs);
    attention_pairs(&pairs, cu_seqlens, heads, d, out);
}

/// [`attention`] from `qkv` already in bf16 pairs by rows (`3 * heads * d
/// / 2` per token, as [`super::packed::PackedLinear::forward_tiles_to_pairs`]
/// writes it; rows past the last token are ignored).
pub fn attention_pairs(qkv: &[u32], cu_seqlens: &[usize], heads: usize, d: usize, out: &mut [f32]) {
    assert!(
        fits(d),
        "AMX attention: head size {d} is not a multiple of {BLOCK}"
    );
    let h = heads * d;
    let w = 3 * h / 2;
    assert!(
        qkv.len() >= cu_seqlens.last().copied().unwrap_or(0) * w,
        "AMX attention: {} pairs of qkv for {:?}",
        qkv.len(),
        cu_seqlens.last()
    );
    let scale = 1.0 / (d as f32).sqrt();
    ops::per_sequence_head(cu_seqlens, heads, d, out, |s, hd, mut dst| {
        let (a, b) = (cu_seqlens[s], cu_seqlens[s + 1]);
        let len = b - a;
        if len == 0 {
            return;
        }
        let row = |i: usize, part: usize| &qkv[(a + i) * w + (part * h + hd * d) / 2..][..d / 2];
        let lp = len.next_multiple_of(BLOCK);
        let (q, v) = qv_tiles(len, lp, d, row);
        let k_at = (a * w + (h + hd * d) / 2, w);
        let k = key_panels(bytemuck::cast_slice(qkv), k_at, len, lp, d);
        let tiles = Tiles::configure();
        // u32 in one 32-row block of Q, and in one 32-key panel of K^T.
        let qb = BLOCK * d / 2;
        let mut scores = vec![0f32; BLOCK * lp];
        let mut p = Lines::zeroed(BLOCK * lp / 2);
        let mut o_block = vec![0f32; BLOCK * d];
        for q0 in (0..len).step_by(BLOCK) {
            let q_blk = &q[q0 / BLOCK * qb..][..qb];
            for j in 0..lp / BLOCK {
                let kp = &k[j * qb..][..qb];
                tiles.block(q_blk, &[kp], None, &mut scores, j * BLOCK, lp);
            }
            let rows = BLOCK.min(len - q0);
            for (r, srow) in scores.chunks_mut(lp).enumerate() {
                if r < rows {
                    simd::softmax_scaled(&mut srow[..len], scale);
                    srow[len..].fill(0.0);
                } else {
                    srow.fill(0.0);
                }
            }
            simd::rows_to_pairs(&scores, lp, 0..BLOCK, None, &mut p, a_tile_index);
            for c in 0..d / BLOCK {
                let vp = &v[c * lp / 2 * BLOCK..][..lp / 2 * BLOCK];
                tiles.block(&p, &[vp], None, &mut o_block, c * BLOCK, d);
            }
            dst.put_rows(q0, &o_block[..rows * d], d);
        }
    });
}

/// One row's bf16 pairs into a 32-row A block in tile order.
fn scatter_row(pairs: &[u32], r: usize, block: &mut [u32]) {
    for (j0, src) in pairs.chunks_exact(PAIRS).enumerate() {
        let i = a_tile_index(r, j0 * PAIRS);
        block[i..i + PAIRS].copy_from_slice(src);
    }
}

/// This head's Q and V (bf16 pairs by rows) in the layouts the tiles read
/// (lengths padded to `lp` with zeros; K^T: [`key_panels`]):
/// - Q as A tiles: 32-row blocks one after another, each `d / 32` K steps;
/// - V as B panels of 32 columns: per panel `lp / 32` steps of 16 pair rows
///   (pairs of consecutive keys) x 32 columns.
///
/// The rows 4 ahead are prefetched: a head's rows are 3 x H values apart
/// in `qkv`, a stride no hardware prefetcher follows.
fn qv_tiles<'a>(
    len: usize,
    lp: usize,
    d: usize,
    row: impl Fn(usize, usize) -> &'a [u32],
) -> (Lines, Lines) {
    const AHEAD: usize = 4;
    let dp = d / 2;
    let (mut q, mut v) = (Lines::zeroed(lp * dp), Lines::zeroed(lp * dp));
    let zeros = vec![0u32; dp];
    for i in 0..len {
        if i + AHEAD < len {
            for part in [0, 2] {
                simd::prefetch(bytemuck::cast_slice(row(i + AHEAD, part)));
            }
        }
        scatter_row(
            row(i, 0),
            i % BLOCK,
            &mut q[i / BLOCK * BLOCK * dp..][..BLOCK * dp],
        );
        if i % 2 == 1 || i + 1 == len {
            // Keys 2pr and 2pr + 1 interleaved: bf16 pairs along K for P V.
            let pr = i / 2;
            let lo: &[u16] = bytemuck::cast_slice(row(2 * pr, 2));
            let hi: &[u16] = bytemuck::cast_slice(if 2 * pr + 1 < len {
                row(2 * pr + 1, 2)
            } else {
                &zeros[..]
            });
            for c in 0..d / BLOCK {
                let dst = &mut v[c * lp / 2 * BLOCK + pr * BLOCK..][..BLOCK];
                for ((o, &l), &h) in dst.iter_mut().zip(&lo[c * BLOCK..]).zip(&hi[c * BLOCK..]) {
                    *o = l as u32 | (h as u32) << 16;
                }
            }
        }
    }
    (q, v)
}

/// K^T as B panels of 32 keys: per panel `d / 32` steps of 16 pair rows
/// (pairs along the head dimension) x 32 keys, i.e. each panel the keys'
/// rows of pairs transposed, 16 keys at a time through the register
/// transpose (keys past `len`, up to `lp`, zero). `at`: where key 0's
/// pairs start in `qkv` and the stride between keys. The pairs only move,
/// so viewing them as f32 is exact.
fn key_panels(qkv: &[f32], at: (usize, usize), len: usize, lp: usize, d: usize) -> Lines {
    let dp = d / 2;
    let (off, stride) = at;
    let mut k = Lines::zeroed(lp * dp);
    let panels: &mut [f32] = bytemuck::cast_slice_mut(&mut k[..]);
    for i0 in (0..len).step_by(simd::LANES) {
        let panel = &mut panels[i0 / BLOCK * BLOCK * dp..][..BLOCK * dp];
        let rows = simd::LANES.min(len - i0);
        let half = &mut panel[i0 % BLOCK..];
        transpose::rows_to_k_major(
            qkv,
            off + i0 * stride,
            stride,
            rows,
            dp,
            simd::LANES,
            BLOCK,
            half,
        );
    }
    k
}

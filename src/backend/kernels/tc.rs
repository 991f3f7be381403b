//! The Rust side of the tensor-core kernels: `kernels/attention_tc.cu` and
//! the instruction self-tests of `kernels/mma_selftest.cu`.

use super::Geometry;

// ---- attention_tc.cu -----------------------------------------------------------

/// Query rows per warp (mma's M) and keys per K/V tile: attention_tc.cu's
/// TC_ROWS and TC_KEYS.
pub const TC_ROWS: usize = 16;
pub const TC_KEYS: usize = 32;
/// Head sizes with a tensor-core instance; others use attention.cu.
pub const TC_HEAD_DIMS: [usize; 3] = [32, 64, 128];

/// Warps per block: attention_tc.cu's `tc_warps`.
pub fn tc_warps(head_dim: usize) -> usize {
    if head_dim > 64 {
        2
    } else {
        4
    }
}

/// One instance per head size `D` (`attention_tc_d{D}_f16`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct AttentionTcParams<const D: usize> {
    pub qkv: u64,
    pub cu_seqlens: u64,
    /// [num_tiles][2] i32: sequence, first query row ([`attention_tc_tiles`]).
    pub tiles: u64,
    pub out: u64,
    pub num_tiles: i32,
    pub heads: i32,
    pub head_dim: i32,
    /// log2(e) / sqrt(D): the softmax runs in the log2 domain.
    pub scale_log2: f32,
}
const _: () = assert!(std::mem::size_of::<AttentionTcParams<64>>() == 48);

impl<const D: usize> AttentionTcParams<D> {
    pub fn new(
        qkv: u64,
        cu_seqlens: u64,
        tiles: u64,
        out: u64,
        num_tiles: usize,
        heads: usize,
    ) -> Self {
        AttentionTcParams {
            qkv,
            cu_seqlens,
            tiles,
            out,
            num_tiles: num_tiles as i32,
            heads: heads as i32,
            head_dim: D as i32,
            scale_log2: std::f32::consts::LOG2_E / (D as f32).sqrt(),
        }
    }
}

/// The work list: every sequence's query rows in tiles of [`TC_ROWS`], as
/// (sequence, first row) pairs, sequence by sequence (so the warps of a block
/// mostly share a sequence's K/V tiles in L1). Empty sequences have none.
pub fn attention_tc_tiles(cu_seqlens: &[usize]) -> Vec<i32> {
    let mut tiles = Vec::new();
    for (s, w) in cu_seqlens.windows(2).enumerate() {
        for row0 in (0..w[1] - w[0]).step_by(TC_ROWS) {
            tiles.extend([s as i32, row0 as i32]);
        }
    }
    tiles
}

/// An upper bound on the tiles of `tokens` tokens in `seqs` sequences
/// (each sequence wastes less than one tile).
pub fn attention_tc_max_tiles(tokens: usize, seqs: usize) -> usize {
    tokens.div_ceil(TC_ROWS) + seqs
}

/// Per warp: two stages of K and V, each [TC_KEYS][D + 8] fp16.
pub fn attention_tc_smem_bytes(head_dim: usize) -> usize {
    tc_warps(head_dim) * 4 * TC_KEYS * (head_dim + 8) * 2
}

/// grid (ceil(num_tiles / warps), heads): one tile per warp.
pub fn attention_tc_geometry(num_tiles: usize, heads: usize, head_dim: usize) -> Geometry {
    let warps = tc_warps(head_dim);
    Geometry {
        grid: (num_tiles.div_ceil(warps) as u32, heads as u32, 1),
        block: (32 * warps as u32, 1, 1),
        smem_bytes: attention_tc_smem_bytes(head_dim) as u32,
    }
}

// ---- mma_selftest.cu (one warp each) ---------------------------------------------

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct MmaSelftestParams {
    pub a: u64,
    pub b: u64,
    pub c: u64,
    pub d: u64,
}
const _: () = assert!(std::mem::size_of::<MmaSelftestParams>() == 32);

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct LdmatrixSelftestParams {
    pub out: u64,
}
const _: () = assert!(std::mem::size_of::<LdmatrixSelftestParams>() == 8);
/// Row stride (halves) of the matrices in ldmatrix_selftest's shared memory.
pub const LDM_SELFTEST_LD: usize = 24;

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CpAsyncSelftestParams {
    pub src: u64,
    pub out: u64,
}
const _: () = assert!(std::mem::size_of::<CpAsyncSelftestParams>() == 16);

pub fn selftest_geometry(smem_bytes: usize) -> Geometry {
    Geometry {
        grid: (1, 1, 1),
        block: (32, 1, 1),
        smem_bytes: smem_bytes as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_every_row_once_and_fit_the_bound() {
        let lens = [1usize, 0, 16, 17, 5, 33];
        let mut cu = vec![0];
        for l in lens {
            cu.push(cu.last().unwrap() + l);
        }
        let tiles = attention_tc_tiles(&cu);
        let pairs: Vec<(i32, i32)> = tiles.chunks(2).map(|c| (c[0], c[1])).collect();
        assert_eq!(
            pairs,
            [
                (0, 0),
                (2, 0),
                (3, 0),
                (3, 16),
                (4, 0),
                (5, 0),
                (5, 16),
                (5, 32)
            ]
        );
        assert!(pairs.len() <= attention_tc_max_tiles(*cu.last().unwrap(), lens.len()));
    }
}

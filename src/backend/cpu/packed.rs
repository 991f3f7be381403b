//! GEMMs on the AVX-512 register tiles of `simd`: a matrix is packed once
//! (weights at load, K and V per attention head) into panels of 16*nv
//! columns (K in blocks only past 4096, or for AMX), and rows of the
//! activations split across the engine's threads.
//!
//! Every output row is computed by the same instructions in the same order
//! whatever its neighbours or the thread count: a sequence's result does not
//! depend on its batch.

use super::amx;
use super::dpbf16;
use super::lines::Lines;
use super::native::View;
use super::path::GemmPath;
use super::simd::{self, Start, Tile, LANES};
use super::transpose;
use rayon::prelude::*;

/// K block of the FMA tiles: every BERT-family K up to 4096 is one block
/// (ALBERT-xxlarge's 16384 is four). Paired against 256-deep blocks (1 and
/// 2 threads, 2-core Sapphire Rapids), one block ran MiniLM's qkv and
/// ffn_up 1.16x faster, BERT-base's four linears 1.09-1.11x, attention
/// at b8 s384 1.01x: the partial-sum round trip and tile entries of every
/// block cost more than the L1 misses of a panel larger than L1.
pub const KC: usize = 4096;

/// K block of the AMX tiles (whose blocking is tuned around it).
pub const AMX_KC: usize = 256;

/// K blocks `(k0, len)` of near-equal length, at most `kc`, each but the
/// last even (bf16 pairs must not straddle two blocks).
fn k_blocks(k: usize, kc: usize) -> Vec<(usize, usize)> {
    let nb = k.div_ceil(kc).max(1);
    let len = k.div_ceil(nb).next_multiple_of(2);
    (0..k)
        .step_by(len)
        .map(|k0| (k0, len.min(k - k0)))
        .collect()
}

#[derive(Debug)]
enum Storage {
    F32(Lines),
    /// bf16 pairs along K, low half the even k.
    Bf16(Lines),
}

/// `B [k, n]` packed: for each K block, for each panel of `16 * nv` columns,
/// the block's rows of that panel (zero-padded past `n`).
#[derive(Debug)]
pub struct Packed {
    pub k: usize,
    pub n: usize,
    nv: usize,
    blocks: Vec<(usize, usize)>,
    /// Where each block's panels start in `data`.
    block_at: Vec<usize>,
    data: Storage,
}

impl Packed {
    fn width(&self) -> usize {
        LANES * self.nv
    }

    fn panels(&self) -> usize {
        self.n.div_ceil(self.width())
    }

    /// Packs `b` (`[k, n]`, any strides) in f32. A transposed matrix
    /// (adjacent rows: nn.Linear weights, K^T) goes through the register
    /// transpose 16 columns at a time, adjacent columns (V) are copied.
    pub fn f32(b: View, nv: usize) -> Packed {
        if b.row_stride != 1 && b.col_stride != 1 {
            return Packed::f32_any(b, nv);
        }
        let w = LANES * nv;
        let mut p = Packed::empty(b.rows, b.cols, nv, 1, KC);
        let Storage::F32(data) = &mut p.data else {
            unreachable!()
        };
        let out = data.cast_mut::<f32>();
        for (&(k0, kl), &at) in p.blocks.iter().zip(&p.block_at) {
            for (pi, panel) in out[at..at + p.n.div_ceil(w) * kl * w]
                .chunks_exact_mut(kl * w)
                .enumerate()
            {
                let cols = w.min(b.cols - pi * w);
                if b.row_stride == 1 {
                    for j0 in (0..cols).step_by(LANES) {
                        let src = b.offset + k0 + (pi * w + j0) * b.col_stride;
                        let rows = LANES.min(cols - j0);
                        let t = &mut panel[j0..];
                        transpose::rows_to_k_major(
                            b.data,
                            src,
                            b.col_stride,
                            rows,
                            kl,
                            LANES,
                            w,
                            t,
                        );
                    }
                } else {
                    let src = b.offset + k0 * b.row_stride + pi * w;
                    transpose::copy_rows(b.data, src, b.row_stride, kl, cols, panel, w);
                }
            }
        }
        p
    }

    /// [`Packed::f32`] one element at a time, for any strides (and what the
    /// fast forms are tested against).
    fn f32_any(b: View, nv: usize) -> Packed {
        Packed::pack(b, nv, 1, KC, |rows: &[Vec<f32>], out: &mut [u32]| {
            for (o, v) in out.iter_mut().zip(&rows[0]) {
                *o = v.to_bits();
            }
        })
    }

    /// `[k, n]` in f32 (`per_step` 1) or bf16 pairs (2), all zero.
    fn empty(k: usize, n: usize, nv: usize, per_step: usize, kc: usize) -> Packed {
        let w = LANES * nv;
        let blocks = k_blocks(k, kc);
        let mut block_at = Vec::with_capacity(blocks.len());
        let mut at = 0;
        for &(_, kl) in &blocks {
            block_at.push(at);
            at += kl.div_ceil(per_step) * n.div_ceil(w) * w;
        }
        let data = Lines::zeroed(at);
        Packed {
            k,
            n,
            nv,
            blocks,
            block_at,
            data: if per_step == 1 {
                Storage::F32(data)
            } else {
                Storage::Bf16(data)
            },
        }
    }

    /// Packs `b` in bf16 (round to nearest even), pairs along K, in K
    /// blocks of at most `kc`.
    pub fn bf16(b: View, nv: usize, kc: usize) -> Packed {
        let vector = simd::features().avx512_bf16;
        Packed::pack(b, nv, 2, kc, |rows: &[Vec<f32>], out: &mut [u32]| {
            if vector {
                return simd::bf16_pairs_of_rows(&rows[0], &rows[1], out);
            }
            let bf = |v: f32| half::bf16::from_f32(v).to_bits() as u32;
            for ((o, lo), hi) in out.iter_mut().zip(&rows[0]).zip(&rows[1]) {
                *o = bf(*lo) | (bf(*hi) << 16);
            }
        })
    }

    /// The layout both element types share: per K block, per panel, one
    /// stored row per `per_step` rows of `b`, each `16 * nv` wide. `store`
    /// turns `per_step` rows (zero past `n` and past `k`) into one.
    fn pack(
        b: View,
        nv: usize,
        per_step: usize,
        kc: usize,
        store: impl Fn(&[Vec<f32>], &mut [u32]),
    ) -> Packed {
        let (k, n) = (b.rows, b.cols);
        let w = LANES * nv;
        let mut p = Packed::empty(k, n, nv, per_step, kc);
        let (Storage::F32(data) | Storage::Bf16(data)) = &mut p.data;
        let out = &mut data[..];
        let mut rows = vec![vec![0f32; w]; per_step];
        let mut at = 0;
        for &(k0, kl) in &p.blocks {
            for pi in 0..n.div_ceil(w) {
                let cols = w.min(n - pi * w);
                for kk in (k0..k0 + kl).step_by(per_step) {
                    for (r, row) in rows.iter_mut().enumerate() {
                        if kk + r < k {
                            b.row_into(kk + r, pi * w, &mut row[..cols]);
                            row[cols..].fill(0.0);
                        } else {
                            row.fill(0.0);
                        }
                    }
                    store(&rows, &mut out[at..at + w]);
                    at += w;
                }
            }
        }
        p
    }

    /// Bytes held (for the memory report).
    pub fn bytes(&self) -> usize {
        match &self.data {
            Storage::F32(d) | Storage::Bf16(d) => d.bytes(),
        }
    }

    pub fn is_bf16(&self) -> bool {
        matches!(self.data, Storage::Bf16(_))
    }

    /// `c[m, n] = act(a[m, k] * B + bias)` on this thread, `a` rows `lda`
    /// apart starting at `a_off`, `c` rows `ldc` apart from `c_off`. `bias`
    /// (when given) is padded to whole panels.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_rows(
        &self,
        a: &[f32],
        a_off: usize,
        lda: usize,
        m: usize,
        bias: Option<&[f32]>,
        gelu: bool,
        c: &mut [f32],
        c_off: usize,
        ldc: usize,
    ) {
        let Storage::F32(data) = &self.data else {
            unreachable!("gemm_rows on bf16 weights: use gemm_rows_bf16")
        };
        let rows = Rows { a, a_off, lda, m };
        let kernel = Kernel {
            per_row: 1,
            tile: simd::tile_f32,
            prep: |_| {},
        };
        self.gemm_steps(data.cast(), kernel, rows, bias, gelu, c, c_off, ldc);
    }

    /// As [`Packed::gemm_rows`] for bf16 weights, `a` dense `[m, k]` f32
    /// (rounded to bf16 as it is packed) and `c` dense `[m, n]`; on
    /// `vdpbf16ps` tiles with `dot` (K even), else widened to FMAs.
    fn gemm_rows_bf16(
        &self,
        a: &[f32],
        bias: Option<&[f32]>,
        gelu: bool,
        dot: bool,
        c: &mut [f32],
    ) {
        let Storage::Bf16(data) = &self.data else {
            unreachable!("gemm_rows_bf16 on f32 weights")
        };
        let rows = Rows {
            a,
            a_off: 0,
            lda: self.k,
            m: a.len() / self.k,
        };
        let kernel = if dot {
            Kernel {
                per_row: 2,
                tile: dpbf16::tile_dpbf16,
                prep: dpbf16::pairs_in_place,
            }
        } else {
            Kernel {
                per_row: 2,
                tile: simd::tile_bf16,
                prep: simd::round_to_bf16,
            }
        };
        self.gemm_steps(data.cast(), kernel, rows, bias, gelu, c, 0, self.n);
    }

    /// The blocked loop every panel type shares. A is packed once for
    /// every K block (and made what the kernel reads), then C is computed in
    /// column chunks whose rows stay in L2 across the K blocks.
    #[allow(clippy::too_many_arguments)]
    fn gemm_steps<P: Copy>(
        &self,
        data: &[P],
        kernel: Kernel<P>,
        a: Rows,
        bias: Option<&[f32]>,
        gelu: bool,
        c: &mut [f32],
        c_off: usize,
        ldc: usize,
    ) {
        let (w, m) = (self.width(), a.m);
        let last = self.blocks.len() - 1;
        let mr = simd::max_rows(self.nv);
        let split = RowTiles::new(m, mr);
        // K block `(k0, kl)`'s A: a tile of `mr` rows of `kl` in 16-k
        // blocks per row tile.
        let a_len = |kl: usize| split.tiles * mr * kl.next_multiple_of(LANES);
        let total = self.blocks.iter().map(|&(_, kl)| a_len(kl)).sum();
        let chunk = (CHUNK_COLS / w).min(self.panels()).max(1);
        // With several K blocks, the partial sums go to a buffer of whole
        // tiles (`mr * w` each, rows `w` apart) rather than to C, whose rows
        // may be kilobytes apart: only the last K block touches C.
        let tile_len = mr * w;
        let partial_len = if last > 0 {
            split.tiles * chunk * tile_len
        } else {
            0
        };
        with_scratch(&A_SCRATCH, total, |ap| {
            with_scratch(&PARTIAL_SCRATCH, partial_len, |partial| {
                let mut at = 0;
                for &(k0, kl) in &self.blocks {
                    pack_a(a.a, a.a_off + k0, a.lda, split, kl, mr, &mut ap[at..]);
                    at += a_len(kl);
                }
                (kernel.prep)(ap);
                let g = GemmParts {
                    ap,
                    tile: kernel.tile,
                    split,
                    mr,
                    chunk,
                    bias,
                    gelu,
                    c_off,
                    ldc,
                };
                for p0 in (0..self.panels()).step_by(chunk) {
                    let mut at = 0;
                    for (bi, &(_, kl)) in self.blocks.iter().enumerate() {
                        let rows_of_block = kl.div_ceil(kernel.per_row);
                        for p in p0..self.panels().min(p0 + chunk) {
                            let panel = &data[self.block_at[bi] + p * rows_of_block * w..]
                                [..rows_of_block * w];
                            let step = Step {
                                bi,
                                kl,
                                at,
                                p,
                                slot: p - p0,
                            };
                            self.panel_tiles(&g, panel, step, partial, c);
                        }
                        at += a_len(kl);
                    }
                }
            })
        })
    }

    /// Every row tile of panel `s.p` for K block `s.bi`: the last block
    /// stores into C (starting from the partial sums, if any came before),
    /// the others into this chunk slot's tiles of `partial`.
    fn panel_tiles<P: Copy>(
        &self,
        g: &GemmParts<P>,
        panel: &[P],
        s: Step,
        partial: &mut [f32],
        c: &mut [f32],
    ) {
        let w = self.width();
        let tile_len = g.mr * w;
        let last = s.bi == self.blocks.len() - 1;
        // The first K block starts from the bias (or zero), one per panel.
        let first = match g.bias {
            Some(b) => Start::Bias(&b[s.p * w..(s.p + 1) * w]),
            None => Start::Zero,
        };
        for i in 0..g.split.tiles {
            let m0 = g.split.start(i);
            let at_partial = (i * g.chunk + s.slot) * tile_len;
            let t = Tile {
                a: g.ap,
                a_off: s.at + i * g.mr * s.kl.next_multiple_of(LANES),
                a_ks: g.mr,
                rows: g.split.rows(i),
                panel,
                kc: s.kl,
                cols: w.min(self.n - s.p * w),
                c_off: g.c_off + m0 * g.ldc + s.p * w,
                ldc: g.ldc,
                start: first,
                gelu: g.gelu && last,
            };
            if last {
                let start = match s.bi {
                    0 => first,
                    _ => Start::From {
                        src: &partial[at_partial..at_partial + tile_len],
                        ld: w,
                    },
                };
                (g.tile)(self.nv, Tile { start, ..t }, c);
            } else {
                let start = match s.bi {
                    0 => first,
                    _ => Start::Accumulate,
                };
                let t = Tile {
                    start,
                    c_off: at_partial,
                    ldc: w,
                    ..t
                };
                (g.tile)(self.nv, t, partial);
            }
        }
    }
}

/// A register tile and what it needs: `per_row` values of k per panel row
/// (1 for f32, 2 for bf16 pairs), and `prep`, which makes packed A what
/// `tile` reads (for bf16, rounded).
struct Kernel<P> {
    per_row: usize,
    tile: fn(usize, Tile<P>, &mut [f32]),
    prep: fn(&mut [f32]),
}

/// One GEMM's parts that every tile shares: packed A, the tile kernel,
/// the row tiles and their packing stride, the epilogue and where C lies.
struct GemmParts<'a, P> {
    ap: &'a [f32],
    tile: fn(usize, Tile<P>, &mut [f32]),
    split: RowTiles,
    /// Rows per packed A tile (the tallest tile the kernel has).
    mr: usize,
    /// Panels per column chunk: the partial-sum buffer holds one chunk.
    chunk: usize,
    bias: Option<&'a [f32]>,
    gelu: bool,
    c_off: usize,
    ldc: usize,
}

/// Where one panel's tiles stand: K block `bi` (`kl` deep, its packed A at
/// `at`), panel `p`, the `slot`th of its chunk.
#[derive(Clone, Copy)]
struct Step {
    bi: usize,
    kl: usize,
    at: usize,
    p: usize,
    slot: usize,
}

type Scratch = std::thread::LocalKey<std::cell::Cell<Vec<f32>>>;

thread_local! {
    /// Each thread's packed-A buffer, kept across calls: a forward makes
    /// thousands of GEMM calls (the attention's per head), and a fresh
    /// buffer each time cost a zeroing pass and, when large, page faults.
    static A_SCRATCH: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
    /// Each thread's partial sums between K blocks, kept likewise.
    static PARTIAL_SCRATCH: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// `f` on this thread's `key` buffer, `len` long, starting on a cache line
/// (a 16-value row piece of a packed A block, or a tile row of partial
/// sums, is then one line). Stale values are harmless: `pack_a` writes
/// every element a tile reads, and the first K block writes every partial
/// sum a later one reads.
fn with_scratch<R>(key: &'static Scratch, len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    // Taken out while in use, so a nested call gets its own (empty) buffer.
    let mut buf = key.take();
    if buf.len() < len + LANES {
        buf.resize(len + LANES, 0.0);
    }
    let skip = buf.as_ptr().align_offset(64).min(LANES);
    let r = f(&mut buf[skip..skip + len]);
    key.set(buf);
    r
}

/// `m` rows of A inside `a`, `lda` apart from `a_off`.
struct Rows<'a> {
    a: &'a [f32],
    a_off: usize,
    lda: usize,
    m: usize,
}

/// Columns of C per chunk: 256 rows x 512 columns of f32 (512 KiB) stay in
/// the 2 MiB L2 while every K block adds to them.
const CHUNK_COLS: usize = 512;

/// `m` rows as `ceil(m / mr)` row tiles whose heights differ by at most
/// one: 64 rows of 14-row tiles are 13, 13, 13, 13, 12 rather than
/// 14, 14, 14, 14, 8, whose last tile does 8 rows' FMAs in most of a full
/// tile's time.
#[derive(Clone, Copy)]
struct RowTiles {
    m: usize,
    tiles: usize,
}

impl RowTiles {
    fn new(m: usize, mr: usize) -> RowTiles {
        RowTiles {
            m,
            tiles: m.div_ceil(mr),
        }
    }

    fn start(&self, i: usize) -> usize {
        i * self.m / self.tiles
    }

    fn rows(&self, i: usize) -> usize {
        self.start(i + 1) - self.start(i)
    }
}

/// The rows of `split` x `kc` of `a` (from `off`, rows `lda` apart) into
/// tiles of `mr` rows in 16-k blocks ([`simd::a_index`]); a shorter tile's
/// missing rows are left as they are (the tile reads only its rows).
fn pack_a(
    a: &[f32],
    off: usize,
    lda: usize,
    split: RowTiles,
    kc: usize,
    mr: usize,
    ap: &mut [f32],
) {
    assert!(mr <= simd::MAX_ROWS);
    let per_tile = mr * kc.next_multiple_of(LANES);
    for (t, tile) in ap[..split.tiles * per_tile]
        .chunks_mut(per_tile)
        .enumerate()
    {
        let (r0, rows) = (split.start(t), split.rows(t));
        transpose::rows_to_k_blocks(a, off + r0 * lda, lda, rows, kc, mr, tile);
    }
}

/// An nn.Linear packed for the tiles: `y = act(x W^T + b)`.
#[derive(Debug)]
pub struct PackedLinear {
    w: Packed,
    /// b padded to whole panels.
    bias: Vec<f32>,
    /// bf16 on AMX tiles (the shape fits them and AMX was asked for).
    amx: bool,
    /// bf16 on `vdpbf16ps` tiles (asked for, and K even).
    dot: bool,
}

/// Panel width of the weights: 32 columns (2 registers, the 14 x 32 tile;
/// also AMX's 32-column block), which divides every BERT-family width (384,
/// 768, 1024, 1152, 1536, 2304, 3072, 4096).
const WEIGHT_NV: usize = 2;

impl PackedLinear {
    /// `w` is `[n, k]` as nn.Linear stores it, packed for `path`'s tiles.
    /// AMX takes the shapes that fit its tiles (N a multiple of 32, each K
    /// block a multiple of 32), `vdpbf16ps` an even K; other shapes go to the
    /// widened AVX512-BF16 tiles. The portable path is the f32 one here.
    pub fn new(w: &[f32], b: &[f32], n: usize, k: usize, path: GemmPath) -> PackedLinear {
        let bf16 = path.is_bf16();
        let amx = path == GemmPath::AmxBf16;
        let wt = View::row_major(w, n, k).t();
        let packed = if bf16 {
            let kc = if amx && amx::available() { AMX_KC } else { KC };
            Packed::bf16(wt, WEIGHT_NV, kc)
        } else {
            Packed::f32(wt, WEIGHT_NV)
        };
        let mut bias = b.to_vec();
        bias.resize(packed.panels() * packed.width(), 0.0);
        let fits = n.is_multiple_of(2 * amx::TILE)
            && packed.nv * LANES == 2 * amx::TILE
            && packed
                .blocks
                .iter()
                .all(|&(_, kl)| kl % (2 * amx::PAIRS) == 0);
        PackedLinear {
            amx: amx && fits && amx::available(),
            dot: path == GemmPath::Avx512Dpbf16 && k.is_multiple_of(2),
            w: packed,
            bias,
        }
    }

    /// K, the width of the input rows.
    pub fn in_dim(&self) -> usize {
        self.w.k
    }

    /// Whether this linear runs on AMX tiles.
    pub fn on_amx(&self) -> bool {
        self.amx
    }

    /// Whether this linear runs on `vdpbf16ps` tiles.
    pub fn on_dot(&self) -> bool {
        self.dot
    }

    /// The AMX forward: A converted to [`ATiles`], then [`Self::forward_tiles`].
    fn forward_amx(&self, x: &[f32], gelu: bool, y: &mut [f32]) {
        let mut a = ATiles::default();
        a.fill(x, self.w.k);
        self.forward_tiles(&a, gelu, y);
    }

    /// `y = act(a W^T + b)` from A already in AMX tile order; `y` holds
    /// `a`'s real rows. Needs [`Self::on_amx`].
    pub fn forward_tiles(&self, a: &ATiles, gelu: bool, y: &mut [f32]) {
        let n = self.w.n;
        assert!(
            y.len() == a.m * n,
            "packed linear: y {} for {} rows -> {n}",
            y.len(),
            a.m
        );
        let m_pad = a.m.next_multiple_of(2 * amx::TILE);
        let mut padded = Vec::new();
        let out: &mut [f32] = if m_pad == a.m {
            &mut *y
        } else {
            padded.resize(m_pad * n, 0f32);
            &mut padded
        };
        self.amx_blocks(a, gelu, AmxOut::Rows(out));
        if m_pad != a.m {
            y.copy_from_slice(&padded[..a.m * n]);
        }
    }

    /// `out = act(a W^T + b)` as bf16 pairs in AMX tile order, the next
    /// linear's A: each finished 32 x 32 block is one K step of it, so the
    /// f32 result never goes to memory. Needs [`Self::on_amx`].
    pub fn forward_tiles_to_tiles(&self, a: &ATiles, gelu: bool, out: &mut ATiles) {
        out.shape(a.m, self.w.n);
        self.amx_blocks(a, gelu, AmxOut::Tiles(&mut out.data));
    }

    /// `y = a W^T + b` as bf16 pairs by rows (`n / 2` per row, rows padded
    /// to whole 32-row blocks): what the AMX attention reads. Needs
    /// [`Self::on_amx`].
    pub fn forward_tiles_to_pairs(&self, a: &ATiles, out: &mut Vec<u32>) {
        out.resize(a.m.next_multiple_of(2 * amx::TILE) * self.w.n / 2, 0);
        self.amx_blocks(a, false, AmxOut::Pairs(out));
    }

    /// Per task of whole 32-row blocks: the tiles configured once, then
    /// panel by panel (a panel's B stays cached across the task's row
    /// blocks) 32 x 32 blocks over the whole K; bias starts the
    /// accumulators, or comes with GELU on the finished block.
    fn amx_blocks(&self, a: &ATiles, gelu: bool, out: AmxOut) {
        assert!(self.amx, "amx_blocks on a linear not on AMX");
        let (k, n) = (self.w.k, self.w.n);
        assert!(a.k == k, "packed linear: A tiles of K {} for K {k}", a.k);
        let Storage::Bf16(data) = &self.w.data else {
            unreachable!("AMX on f32 weights")
        };
        let data: &[u32] = data;
        let blk = 2 * amx::TILE;
        let kp = k.div_ceil(2);
        let rows = rows_per_task(a.m, blk);
        let a_rows = a.data.par_chunks(rows * kp);
        let task = |xc: &[u32], mut dst: AmxOut| {
            let tiles = amx::Tiles::configure();
            let mt = xc.len() / kp;
            // With GELU, blocks alternate between two buffers: a finished
            // block's bias, GELU and store run between the K steps of the
            // next one, while the tile unit works.
            let mut bufs = [[0f32; 32 * 32]; 2];
            let mut pending: Option<(usize, usize)> = None;
            let mut flip = false;
            for p in 0..n / blk {
                // This panel's K blocks, in K order.
                let segments: Vec<&[u32]> = self
                    .w
                    .blocks
                    .iter()
                    .enumerate()
                    .map(|(bi, &(_, kl))| {
                        let bkp = kl / 2;
                        &data[self.w.block_at[bi] + p * bkp * blk..][..bkp * blk]
                    })
                    .collect();
                let bias = &self.bias[p * blk..(p + 1) * blk];
                for m0 in (0..mt).step_by(blk) {
                    let a = &xc[m0 * kp..(m0 + blk) * kp];
                    if !gelu {
                        match &mut dst {
                            AmxOut::Rows(y) => {
                                tiles.block(a, &segments, Some(bias), y, m0 * n + p * blk, n)
                            }
                            AmxOut::Tiles(_) | AmxOut::Pairs(_) => {
                                tiles.block(a, &segments, Some(bias), &mut bufs[0], 0, blk);
                                self.store_block(&bufs[0], 0..blk, p, m0, &mut dst, None);
                            }
                        }
                        continue;
                    }
                    // Which buffer is `now` flips per block (an index, not a
                    // swap: swapping the arrays copied 8 KiB per block).
                    let [b0, b1] = &mut bufs;
                    let (now, prev) = if flip { (b1, b0) } else { (b0, b1) };
                    let mut done = 0;
                    tiles.block_with(a, &segments, None, now, 0, blk, &mut |step, steps| {
                        if let Some((pp, pm0)) = pending {
                            let upto = (step + 1) * blk / steps;
                            self.gelu_block(prev, done..upto, pp, pm0, &mut dst);
                            done = upto;
                        }
                    });
                    if let Some((pp, pm0)) = pending {
                        self.gelu_block(prev, done..blk, pp, pm0, &mut dst);
                    }
                    pending = Some((p, m0));
                    flip = !flip;
                }
            }
            if let Some((pp, pm0)) = pending {
                let last = &mut bufs[usize::from(!flip)];
                self.gelu_block(last, 0..blk, pp, pm0, &mut dst);
            }
        };
        match out {
            AmxOut::Rows(y) => y
                .par_chunks_mut(rows * n)
                .zip(a_rows)
                .for_each(|(yc, xc)| task(xc, AmxOut::Rows(yc))),
            AmxOut::Tiles(d) => d
                .par_chunks_mut(rows * n / 2)
                .zip(a_rows)
                .for_each(|(dc, xc)| task(xc, AmxOut::Tiles(dc))),
            AmxOut::Pairs(d) => d
                .par_chunks_mut(rows * n / 2)
                .zip(a_rows)
                .for_each(|(dc, xc)| task(xc, AmxOut::Pairs(dc))),
        }
    }

    /// Bias and GELU on `rows` of a finished 32 x 32 block of panel `p`,
    /// row block `m0`, then [`Self::store_block`].
    fn gelu_block(
        &self,
        buf: &mut [f32],
        rows: std::ops::Range<usize>,
        p: usize,
        m0: usize,
        dst: &mut AmxOut,
    ) {
        let blk = 2 * amx::TILE;
        if rows.is_empty() {
            return;
        }
        let bias = &self.bias[p * blk..(p + 1) * blk];
        match dst {
            AmxOut::Rows(_) => {
                simd::bias_gelu_block(buf, rows.start * blk, blk, rows.len(), blk, bias, true);
                self.store_block(buf, rows, p, m0, dst, None);
            }
            // Bias and GELU in the same pass as the rounding to bf16.
            AmxOut::Tiles(_) | AmxOut::Pairs(_) => {
                self.store_block(buf, rows, p, m0, dst, Some(bias))
            }
        }
    }

    /// `rows` of a finished 32 x 32 block (panel `p`, row block `m0`) to
    /// where the task writes: f32 rows, or bf16 pairs (after `+ bias` and
    /// GELU when `gelu_bias` is given) by rows or as one K step of the next
    /// A tiles.
    fn store_block(
        &self,
        buf: &[f32],
        rows: std::ops::Range<usize>,
        p: usize,
        m0: usize,
        dst: &mut AmxOut,
        gelu_bias: Option<&[f32]>,
    ) {
        let (blk, n) = (2 * amx::TILE, self.w.n);
        match dst {
            AmxOut::Rows(y) => {
                assert!(
                    gelu_bias.is_none(),
                    "store_block: f32 rows take GELU before"
                );
                for r in rows {
                    y[(m0 + r) * n + p * blk..][..blk].copy_from_slice(&buf[r * blk..][..blk]);
                }
            }
            AmxOut::Pairs(d) => {
                let at = |r: usize, j: usize| (m0 + r) * (n / 2) + p * amx::PAIRS + j;
                simd::rows_to_pairs(buf, blk, rows, gelu_bias, d, at);
            }
            AmxOut::Tiles(d) => {
                let d = &mut d[(m0 / blk) * blk * (n / 2)..][..blk * (n / 2)];
                let at = |r: usize, j: usize| amx::a_tile_index(r, p * amx::PAIRS + j);
                simd::rows_to_pairs(buf, blk, rows, gelu_bias, d, at);
            }
        }
    }

    pub fn bytes(&self) -> usize {
        self.w.bytes() + self.bias.len() * 4
    }

    /// `y [m, n] = act(x [m, k] W^T + b)`, rows split across the current
    /// rayon pool.
    pub fn forward(&self, x: &[f32], gelu: bool, y: &mut [f32]) {
        let (k, n) = (self.w.k, self.w.n);
        assert!(
            x.len().is_multiple_of(k) && y.len() == x.len() / k * n,
            "packed linear: x {} / y {} for [{k} -> {n}]",
            x.len(),
            y.len()
        );
        let m = x.len() / k;
        if m == 0 {
            return;
        }
        if self.amx {
            return self.forward_amx(x, gelu, y);
        }
        // Tasks of equal rows, not whole tiles: the row tiles even out
        // inside each (`RowTiles`).
        let rows = rows_per_task(m, 1);
        if self.w.is_bf16() {
            y.par_chunks_mut(rows * n)
                .zip(x.par_chunks(rows * k))
                .for_each(|(yc, xc)| {
                    self.w
                        .gemm_rows_bf16(xc, Some(&self.bias), gelu, self.dot, yc)
                });
        } else {
            y.par_chunks_mut(rows * n)
                .zip(x.par_chunks(rows * k))
                .for_each(|(yc, xc)| {
                    let mc = xc.len() / k;
                    self.w
                        .gemm_rows(xc, 0, k, mc, Some(&self.bias), gelu, yc, 0, n)
                });
        }
    }
}

/// Rows per task: at least one task per thread, at most about 256 rows each
/// (512 measured no better), a multiple of `mr`.
fn rows_per_task(m: usize, mr: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let tasks = threads * m.div_ceil(threads * 256).max(1);
    m.div_ceil(tasks).next_multiple_of(mr)
}

/// Where [`PackedLinear::amx_blocks`] writes one task's rows.
enum AmxOut<'a> {
    /// f32 rows, `n` apart.
    Rows(&'a mut [f32]),
    /// bf16 pairs in AMX tile order ([`ATiles`]).
    Tiles(&'a mut [u32]),
    /// bf16 pairs by rows, `n / 2` apart.
    Pairs(&'a mut [u32]),
}

/// An activation `[m, k]` as bf16 pairs in AMX tile order
/// ([`amx::a_tile_index`]), rows zero-padded to whole 32-row blocks: what
/// the AMX linears read. Reused across calls, so a forward allocates it
/// once.
#[derive(Debug, Default)]
pub struct ATiles {
    data: Lines,
    m: usize,
    k: usize,
}

impl ATiles {
    /// Sizes the tiles for `m` rows of `k` (k even), keeping the storage.
    fn shape(&mut self, m: usize, k: usize) {
        assert!(
            k.is_multiple_of(2 * amx::PAIRS),
            "A tiles: K {k} is not whole tiles"
        );
        (self.m, self.k) = (m, k);
        let len = m.next_multiple_of(2 * amx::TILE) * k / 2;
        self.data.resize(len);
    }

    /// `before(i, row)` on each row `i` of `x` (rows of `k`, in parallel),
    /// then the rows converted as [`Self::fill`] does, while each is still
    /// in cache: a row-wise op whose output feeds an AMX linear writes its
    /// f32 rows and the linear's A in one pass.
    pub fn fill_after(
        &mut self,
        x: &mut [f32],
        k: usize,
        before: impl Fn(usize, &mut [f32]) + Sync,
    ) {
        let rows = self.shape_for(x.len(), k);
        self.data
            .par_chunks_mut(rows * k / 2)
            .zip(x.par_chunks_mut(rows * k))
            .enumerate()
            .for_each(|(t, (d, xs))| {
                for (i, row) in xs.chunks_mut(k).enumerate() {
                    before(t * rows + i, row);
                }
                fill_rows(xs, k, d);
            });
    }

    /// `x`'s rows of `k`, converted (round to nearest even); the padding
    /// rows are zeroed.
    pub fn fill(&mut self, x: &[f32], k: usize) {
        let rows = self.shape_for(x.len(), k);
        self.data
            .par_chunks_mut(rows * k / 2)
            .zip(x.par_chunks(rows * k))
            .for_each(|(d, xs)| fill_rows(xs, k, d));
    }

    /// Shapes the tiles for `len` values in rows of `k`; the rows each
    /// parallel task converts (whole 32-row blocks, so the tasks' chunks of
    /// the tiles and of the rows pair up one to one).
    fn shape_for(&mut self, len: usize, k: usize) -> usize {
        assert!(
            len.is_multiple_of(k),
            "A tiles: {len} values in rows of {k}"
        );
        self.shape(len / k, k);
        rows_per_task(self.m, 2 * amx::TILE)
    }
}

/// Rows of `k` into 32-row blocks of A tiles (`d`, whole blocks; rows past
/// the end of `x` zeroed).
fn fill_rows(x: &[f32], k: usize, d: &mut [u32]) {
    let kp = k / 2;
    let block = 2 * amx::TILE * kp;
    let real = x.len() / k;
    for (b, db) in d.chunks_mut(block).enumerate() {
        let r0 = b * 2 * amx::TILE;
        let rows = real.saturating_sub(r0).min(2 * amx::TILE);
        let xb = &x[(r0 * k).min(x.len())..];
        simd::rows_to_pairs(xb, k, 0..rows, None, db, amx::a_tile_index);
        for r in rows..2 * amx::TILE {
            for j0 in (0..kp).step_by(amx::PAIRS) {
                let i = amx::a_tile_index(r, j0);
                db[i..i + amx::PAIRS].fill(0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(p: &Packed) -> Vec<u32> {
        let (Storage::F32(d) | Storage::Bf16(d)) = &p.data;
        d.to_vec()
    }

    /// The transposing and copying forms of f32 packing lay out every
    /// element (and the zero padding) as the one-element-at-a-time form:
    /// weights (`[n, k]` read transposed), K^T and V read from inside a
    /// wider QKV row, with K blocks, panel tails and short K.
    #[test]
    fn fast_f32_packing_equals_the_plain_one() {
        let data: Vec<f32> = (0..300 * 1700).map(|i| i as f32 * 0.25 - 9.0).collect();
        for nv in 1..=3 {
            for (k, n) in [
                (1, 1),
                (7, 5),
                (64, 40),
                (70, 384),
                (300, 33),
                (520, 48),
                (4200, 40),
            ] {
                let views = [
                    View::row_major(&data[..n * k], n, k).t(),
                    View {
                        data: &data,
                        offset: 11,
                        rows: k,
                        cols: n,
                        row_stride: 1,
                        col_stride: 3 * k + 2,
                    },
                    View {
                        data: &data,
                        offset: 5,
                        rows: k,
                        cols: n,
                        row_stride: n + 9,
                        col_stride: 1,
                    },
                ];
                for (i, v) in views.into_iter().enumerate() {
                    let (fast, plain) = (Packed::f32(v, nv), Packed::f32_any(v, nv));
                    assert_eq!(
                        (fast.blocks.clone(), fast.block_at.clone()),
                        (plain.blocks.clone(), plain.block_at.clone())
                    );
                    assert!(
                        bits(&fast) == bits(&plain),
                        "view {i}, k {k}, n {n}, nv {nv}"
                    );
                }
            }
        }
    }
}

//! The CPU engine's encoder on AVX-512: weights packed once at load (f32, or
//! bf16 for `--dtype bf16`), bias and GELU fused into the GEMM tiles,
//! residual + LayerNorm in one pass per row, and attention blocked over
//! queries on the same tiles. `ops` stays the plain reference it is checked
//! against.

use super::amx_attention;
use super::native::View;
use super::ops;
use super::packed::{ATiles, Packed, PackedLinear};
pub use super::path::{choose_path, GemmPath, FORCE_ENV};
use super::simd;
use super::workspace::{Spare, Workspace};
use crate::batch::Batch;
use crate::config::Activation;
use crate::model::{EncoderLinear, Linear, ModelWeights};
use crate::options::Dtype;
use rayon::prelude::*;
use std::collections::HashMap;

struct FastAttention {
    qkv: PackedLinear,
    out: PackedLinear,
}

struct FastFfn {
    up: PackedLinear,
    down: PackedLinear,
}

/// The encoder's linears packed for the tiles (ALBERT's shared blocks once).
pub struct FastEncoder {
    pub path: GemmPath,
    project: Option<PackedLinear>,
    attention: Vec<FastAttention>,
    ffn: Vec<FastFfn>,
    spare: Spare,
}

fn pack(l: &Linear, path: GemmPath) -> PackedLinear {
    PackedLinear::new(&l.w, &l.b, l.out_dim, l.in_dim, path)
}

/// Encoder linears packed while the files are read (`model::read_dir_with`'s
/// hook), each f32 dropped at once: bf16 loading then never holds every
/// layer's f32 weights together, only one layer's.
pub struct Prepacked {
    path: GemmPath,
    linears: HashMap<EncoderLinear, PackedLinear>,
}

impl Prepacked {
    /// For a load with `dtype` on the CPU: where the path chosen packs to
    /// bf16 (half the bytes of the f32 read), else None (nothing to gain;
    /// the portable path keeps the f32 weights).
    pub fn for_dtype(dtype: Dtype) -> Option<Prepacked> {
        let (path, _) = choose_path(dtype == Dtype::Bf16);
        path.is_bf16().then(|| Prepacked {
            path,
            linears: HashMap::new(),
        })
    }

    /// The hook for `read_dir_with` / `random_weights_with`: packs into
    /// `pre` where there is one, else leaves the linears as read.
    pub fn hook(pre: &mut Option<Prepacked>) -> impl FnMut(EncoderLinear, &mut Linear) + '_ {
        move |slot, l| {
            if let Some(p) = pre {
                p.linears.insert(slot, pack(l, p.path));
                l.w = Vec::new();
            }
        }
    }

    pub fn path(&self) -> GemmPath {
        self.path
    }
}

impl FastEncoder {
    /// Packs the encoder's weights and frees their f32 originals (the heads
    /// keep theirs): one copy of each weight stays in memory. Linears in
    /// `pre` (packed as they were read, for `path`) are taken as they are.
    pub fn take(w: &mut ModelWeights, path: GemmPath, pre: Option<Prepacked>) -> FastEncoder {
        let mut pre = pre.map(|p| p.linears);
        let mut packed = |slot: EncoderLinear, l: &mut Linear| {
            let p = pre
                .as_mut()
                .and_then(|m| m.remove(&slot))
                .unwrap_or_else(|| pack(l, path));
            l.w = Vec::new();
            p
        };
        FastEncoder {
            path,
            project: w
                .embeddings
                .project
                .as_mut()
                .map(|l| packed(EncoderLinear::Project, l)),
            attention: w
                .attention
                .iter_mut()
                .enumerate()
                .map(|(i, a)| FastAttention {
                    qkv: packed(EncoderLinear::Qkv(i), &mut a.qkv),
                    out: packed(EncoderLinear::Out(i), &mut a.out),
                })
                .collect(),
            ffn: w
                .ffn
                .iter_mut()
                .enumerate()
                .map(|(i, f)| FastFfn {
                    up: packed(EncoderLinear::Up(i), &mut f.up),
                    down: packed(EncoderLinear::Down(i), &mut f.down),
                })
                .collect(),
            spare: Spare::default(),
        }
    }

    /// Bytes of packed weights.
    pub fn bytes(&self) -> usize {
        let a: usize = self
            .attention
            .iter()
            .map(|a| a.qkv.bytes() + a.out.bytes())
            .sum();
        let f: usize = self.ffn.iter().map(|f| f.up.bytes() + f.down.bytes()).sum();
        a + f + self.project.as_ref().map_or(0, |p| p.bytes())
    }

    /// Final hidden states `[tokens, H]`, on the current rayon pool.
    pub fn encode(&self, w: &ModelWeights, batch: &Batch) -> Vec<f32> {
        self.spare.with(|ws| self.encode_in(w, batch, ws))
    }

    fn encode_in(&self, w: &ModelWeights, batch: &Batch, ws: &mut Workspace) -> Vec<f32> {
        let c = &w.config;
        let h = c.hidden_size;
        let t = batch.num_tokens();
        let mut x = super::engine::embeddings_of(w, batch);
        if let Some(p) = &self.project {
            let mut y = vec![0f32; t * h];
            p.forward(&x, false, &mut y);
            x = y;
        }
        let gelu = c.act == Activation::Gelu;
        // The linears' outputs on huge pages (huge_pages.rs: why); f32 QKV
        // only off the AMX attention path. On AMX every linear reads its A
        // as bf16 tiles from a_in, and the FFN's GELU output goes straight
        // into a_mid. The layer input x and the attention block's output y
        // are also A tiles (a_x, a_y), written by the LayerNorm that makes
        // them; `x_tiled` says a_x holds the current x.
        let Workspace {
            qkv: qkv_buf,
            ctx,
            y,
            u: u_buf,
            a_in,
            a_mid,
            a_x,
            a_y,
            qkv_pairs,
        } = ws;
        let ctx = ctx.ensure(t * h);
        let y = y.ensure(t * h);
        let inter = w.ffn.iter().map(|f| f.up.out_dim).max().unwrap_or(0);
        let mut x_tiled = false;
        for &(ai, fi) in &w.schedule {
            let (fa, ff) = (&self.attention[ai], &self.ffn[fi]);
            let (la, lf) = (&w.attention[ai].ln, &w.ffn[fi].ln);
            let tiles = self.path == GemmPath::AmxBf16
                && [&fa.qkv, &fa.out, &ff.up, &ff.down]
                    .iter()
                    .all(|l| l.on_amx());
            let linear = |l: &PackedLinear, x: &[f32], y: &mut [f32], a: &mut ATiles| {
                if tiles {
                    a.fill(x, l.in_dim());
                    l.forward_tiles(a, false, y);
                } else {
                    l.forward(x, false, y);
                }
            };
            if tiles && amx_attention::fits(c.head_dim) {
                // Q, K and V leave the GEMM as bf16, the attention's input.
                if !x_tiled {
                    a_x.fill(&x, h);
                }
                fa.qkv.forward_tiles_to_pairs(a_x, qkv_pairs);
                amx_attention::attention_pairs(
                    qkv_pairs,
                    batch.cu_seqlens(),
                    c.num_heads,
                    c.head_dim,
                    ctx,
                );
            } else {
                let qkv = qkv_buf.ensure(t * 3 * h);
                linear(&fa.qkv, &x, qkv, a_in);
                attention(qkv, batch.cu_seqlens(), c.num_heads, c.head_dim, ctx);
            }
            linear(&fa.out, ctx, y, a_in);
            let eps = c.layer_norm_eps;
            if tiles {
                residual_layernorm_tiles(y, &x, &la.gamma, &la.beta, eps, a_y);
            } else {
                residual_layernorm(y, &x, &la.gamma, &la.beta, eps);
            }
            if tiles && gelu {
                ff.up.forward_tiles_to_tiles(a_y, true, a_mid);
                ff.down.forward_tiles(a_mid, false, &mut x);
            } else {
                let u = &mut u_buf.ensure(t * inter)[..t * w.ffn[fi].up.out_dim];
                ff.up.forward(y, gelu, u);
                if !gelu {
                    u.par_iter_mut().for_each(|v| *v = ops::act(*v, c.act));
                }
                ff.down.forward(u, false, &mut x);
            }
            x_tiled = tiles;
            if tiles {
                residual_layernorm_tiles(&mut x, y, &lf.gamma, &lf.beta, eps, a_x);
            } else {
                residual_layernorm(&mut x, y, &lf.gamma, &lf.beta, eps);
            }
        }
        x
    }
}

/// In place per row: x = LN(x + residual).
fn residual_layernorm(x: &mut [f32], residual: &[f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let w = gamma.len();
    x.par_chunks_mut(w)
        .zip(residual.par_chunks(w))
        .for_each(|(row, r)| simd::residual_layernorm(row, None, Some(r), gamma, beta, eps));
}

/// [`residual_layernorm`] that also leaves its rows in `tiles`, as the next
/// AMX linear reads them.
fn residual_layernorm_tiles(
    x: &mut [f32],
    residual: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    tiles: &mut ATiles,
) {
    let w = gamma.len();
    tiles.fill_after(x, w, |i, row| {
        simd::residual_layernorm(row, None, Some(&residual[i * w..][..w]), gamma, beta, eps)
    });
}

/// Query rows per block: two whole 14-row tiles for both products (16 had
/// QK^T in 8-row tiles and PV in a 14-row and a 2-row one: 46-64 GFLOP/s
/// at b8·s128/s384 against 55-100 for 28, 42 or 56). The scores of 28
/// queries against up to 512 keys (56 KiB) stay in L2; nothing
/// `[len, len]` is materialised.
const QUERY_BLOCK: usize = 28;

/// Multi-head self-attention over packed sequences, as
/// [`ops::attention_packed`] computes it, on the tiles: per (sequence,
/// head), K^T and V packed once, then per block of queries S = Q K^T,
/// softmax(S / sqrt(d)) in place and O = P V. f32 on every path: on this
/// CPU a `vdpbf16ps` tile is no faster than an f32 one (one port against
/// two FMA ports; measured), and bf16 here would only add rounding.
pub fn attention(qkv: &[f32], cu_seqlens: &[usize], heads: usize, d: usize, out: &mut [f32]) {
    let h = heads * d;
    let h3 = 3 * h;
    let scale = 1.0 / (d as f32).sqrt();
    let v_nv = if d.is_multiple_of(32) { 2 } else { 1 };
    ops::per_sequence_head(cu_seqlens, heads, d, out, |s, hd, dst| {
        let (a, b) = (cu_seqlens[s], cu_seqlens[s + 1]);
        let len = b - a;
        if len == 0 {
            return;
        }
        let q_off = a * h3 + hd * d;
        let view = |offset, rows, cols, row_stride, col_stride| View {
            data: qkv,
            offset,
            rows,
            cols,
            row_stride,
            col_stride,
        };
        // 32-column panels for K^T too: 14-row tiles (QUERY_BLOCK).
        let kt = Packed::f32(view(q_off + h, d, len, 1, h3), 2);
        let v = Packed::f32(view(q_off + 2 * h, len, d, h3, 1), v_nv);
        let mut scores = vec![0f32; QUERY_BLOCK.min(len) * len];
        for q0 in (0..len).step_by(QUERY_BLOCK) {
            let r = QUERY_BLOCK.min(len - q0);
            let s = &mut scores[..r * len];
            kt.gemm_rows(qkv, q_off + q0 * h3, h3, r, None, false, s, 0, len);
            for row in s.chunks_mut(len) {
                simd::softmax_scaled(row, scale);
            }
            let o_at = dst.at + q0 * dst.ld;
            v.gemm_rows(s, 0, len, r, None, false, dst.rows, o_at, dst.ld);
        }
    });
}

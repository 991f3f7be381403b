//! The launches the forward pass is made of, each building its kernel's
//! params struct and geometry (see `backend/kernels.rs`).

use super::workspace::{Buf, Workspace};
use super::{AttnWork, DevPtr, Epilogue, Fp16Model, Seam};
use crate::backend::kernels as k;
use crate::config::Activation;
use crate::error::Result;
use crate::model::{LayerNorm, Linear};
use half::f16;
use std::sync::atomic::Ordering;

impl<S: Seam> Fp16Model<S> {
    /// Runs `f` inside a profiler range named `name`.
    pub(super) fn op<R>(&self, name: &str, f: impl FnOnce() -> Result<R>) -> Result<R> {
        self.seam.range_push(name);
        let r = f();
        self.seam.range_pop();
        r
    }

    /// y = x W^T (no bias).
    pub(super) fn gemm(&self, x: DevPtr, l: &Linear<DevPtr>, y: DevPtr, rows: usize) -> Result<()> {
        self.seam.gemm(x, l.w, y, rows, l.out_dim, l.in_dim)
    }

    /// x = act(x + bias) in place; `bias` 0 for none.
    pub(super) fn bias_act(
        &self,
        x: DevPtr,
        bias: DevPtr,
        rows: usize,
        width: usize,
        act: k::ActCode,
    ) -> Result<()> {
        self.seam.launch(
            k::BiasActParams {
                x,
                bias,
                rows: rows as i32,
                width: width as i32,
                act,
                _pad: 0,
            },
            k::bias_act_geometry(rows, width),
        )
    }

    /// y = act(x W^T + b), `act` None adds the bias only. The bias (and
    /// the tanh form of GELU) ride in the GEMM's epilogue; every other
    /// activation, erf-GELU included, is the exact bias_act kernel after it.
    pub(super) fn linear(
        &self,
        x: DevPtr,
        l: &Linear<DevPtr>,
        y: DevPtr,
        rows: usize,
        act: Option<Activation>,
    ) -> Result<()> {
        let epilogue = match act {
            None => Some(Epilogue::Bias),
            Some(Activation::GeluTanh) => Some(Epilogue::BiasGeluTanh),
            Some(_) => None,
        };
        match epilogue {
            Some(e) => self
                .seam
                .gemm_bias(x, l.w, l.b, y, rows, l.out_dim, l.in_dim, e),
            None => {
                self.gemm(x, l, y, rows)?;
                self.bias_act(y, l.b, rows, l.out_dim, k::ActCode::of(act))
            }
        }
    }

    /// out = LN(x + bias + residual); `bias` and `residual` 0 for none.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn add_bias_residual_layernorm(
        &self,
        x: DevPtr,
        bias: DevPtr,
        residual: DevPtr,
        ln: &LayerNorm<DevPtr>,
        out: DevPtr,
        rows: usize,
        width: usize,
    ) -> Result<()> {
        let (chunks, geometry) = k::layernorm_plan(rows, width);
        self.seam.launch(
            k::AddBiasResidualLayerNormParams {
                x,
                bias,
                residual,
                gamma: ln.gamma,
                beta: ln.beta,
                out,
                rows: rows as i32,
                width: width as i32,
                eps: self.w.config.layer_norm_eps,
                chunks,
            },
            geometry,
        )
    }

    /// Whether attention runs on tensor cores (attention_tc.cu): head sizes
    /// with an instance; attention.cu for the rest.
    pub(super) fn tensor_core_attention(&self) -> bool {
        k::TC_HEAD_DIMS.contains(&self.w.config.head_dim)
    }

    /// AttnContext = softmax(Q K^T / sqrt(d)) V per sequence and head.
    pub(super) fn attention(&self, ws: &Workspace, a: AttnWork) -> Result<()> {
        let c = &self.w.config;
        let (qkv, cu, tiles, out) = (
            ws[Buf::Qkv],
            ws[Buf::CuSeqlens],
            ws[Buf::AttnTiles],
            ws[Buf::AttnContext],
        );
        let tc = k::attention_tc_geometry(a.tiles, c.num_heads, c.head_dim);
        let heads = c.num_heads;
        match c.head_dim {
            32 => self.seam.launch(
                k::AttentionTcParams::<32>::new(qkv, cu, tiles, out, a.tiles, heads),
                tc,
            ),
            64 => self.seam.launch(
                k::AttentionTcParams::<64>::new(qkv, cu, tiles, out, a.tiles, heads),
                tc,
            ),
            128 => self.seam.launch(
                k::AttentionTcParams::<128>::new(qkv, cu, tiles, out, a.tiles, heads),
                tc,
            ),
            d => self.seam.launch(
                k::AttentionParams {
                    qkv,
                    cu_seqlens: cu,
                    out,
                    num_seqs: a.seqs as i32,
                    heads: heads as i32,
                    head_dim: d as i32,
                    ld: k::attention_smem_ld(d) as i32,
                    scale: 1.0 / (d as f32).sqrt(),
                    _pad: 0,
                },
                k::attention_geometry(a.seqs, heads, d, a.max_len),
            ),
        }
    }

    /// FirstTokens = the first token's row of each sequence of `Hidden`.
    pub(super) fn gather_first_tokens(&self, ws: &Workspace, t: usize, s: usize) -> Result<()> {
        self.seam.launch(
            k::GatherRowsParams {
                x: ws[Buf::Hidden],
                row_ids: ws[Buf::FirstRows],
                out: ws[Buf::FirstTokens],
                n: s as i32,
                rows: t as i32,
                width: self.w.config.hidden_size as i32,
                _pad: 0,
            },
            k::gather_rows_geometry(s),
        )
    }

    /// Queues a copy of `n` fp16 values to the host, ordered after every
    /// launch issued so far; their values once the forward has waited.
    pub(super) fn read(&self, p: DevPtr, n: usize) -> Result<Readback> {
        let offset = self.readback_used.fetch_add(n * 2, Ordering::Relaxed);
        self.seam.download_async(p, offset, n * 2)?;
        Ok(Readback {
            offset,
            n,
            f32: false,
        })
    }

    /// After the forward's one wait: everything `read` queued.
    pub(super) fn fetch(&self) -> Result<Fetched> {
        let mut bytes = vec![0u8; self.readback_used.load(Ordering::Relaxed)];
        self.seam.read_back(0, &mut bytes)?;
        Ok(Fetched(bytes))
    }

    /// As [`Self::read`] for `n` f32 values.
    pub(super) fn read_f32(&self, p: DevPtr, n: usize) -> Result<Readback> {
        let offset = self.readback_used.fetch_add(n * 4, Ordering::Relaxed);
        self.seam.download_async(p, offset, n * 4)?;
        Ok(Readback {
            offset,
            n,
            f32: true,
        })
    }
}

/// Where a queued read lands in the readback buffer: `n` fp16 values, or
/// f32 ones.
#[derive(Clone, Copy, Debug)]
pub(super) struct Readback {
    offset: usize,
    n: usize,
    f32: bool,
}

/// The readback buffer's contents after the wait.
pub(super) struct Fetched(Vec<u8>);

impl Readback {
    pub(super) fn values(self, f: &Fetched) -> Vec<f32> {
        if self.f32 {
            return f.0[self.offset..self.offset + 4 * self.n]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
        }
        f.0[self.offset..self.offset + 2 * self.n]
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect()
    }
}

/// A result to build from the readbacks once they have arrived.
pub(super) type Pending<T> = Box<dyn FnOnce(&Fetched) -> T + Send>;

//! The fp16 forward pass, written once against the launch [`Seam`]: weights
//! uploaded once as fp16, one workspace sized for the largest batch seen and
//! reused, and each layer a straight list of launches in data-flow order.
//!
//! ALBERT's shared blocks are uploaded once; the schedule reuses their
//! pointers for every layer that shares them.

pub mod seam;

use crate::backend::kernels::{self as k, Geometry};
use crate::batch::Batch;
use crate::config::{Activation, ModelConfig};
use crate::error::{Error, Result};
use crate::model::{ClassifierHead, HeadWeights, LayerNorm, Linear, ModelWeights};
use crate::output::{ForwardOutput, HeadOutput};
use half::f16;
pub use seam::{DevPtr, Launch, Seam};
use std::sync::Mutex;

#[derive(Clone, Copy)]
struct DLinear {
    w: DevPtr,
    b: DevPtr,
    in_dim: usize,
    out_dim: usize,
}

#[derive(Clone, Copy)]
struct DLayerNorm {
    gamma: DevPtr,
    beta: DevPtr,
}

struct DAttention {
    qkv: DLinear,
    out: DLinear,
    ln: DLayerNorm,
}

struct DFfn {
    up: DLinear,
    down: DLinear,
    ln: DLayerNorm,
}

struct DMlm {
    transform: DLinear,
    act: Activation,
    ln: DLayerNorm,
    decoder: DLinear,
}

enum DHead {
    None,
    MaskedLm(DMlm),
    QuestionAnswering(DLinear),
    Pooled(DLinear),
    FirstToken {
        dense: DLinear,
        act: Activation,
        out_proj: DLinear,
    },
    TokenClassification(DLinear),
    Discriminator {
        dense: DLinear,
        act: Activation,
        prediction: DLinear,
    },
    AlbertPreTraining {
        mlm: DMlm,
        sop: DLinear,
    },
}

/// Activation buffers for up to `tokens` tokens in `seqs` sequences.
struct Workspace {
    tokens: usize,
    seqs: usize,
    ptrs: Vec<DevPtr>,
    ids: DevPtr,
    pos_ids: DevPtr,
    type_ids: DevPtr,
    cu_seqlens: DevPtr,
    first_rows: DevPtr,
    emb: DevPtr,
    x: DevPtr,
    qkv: DevPtr,
    ctx: DevPtr,
    y: DevPtr,
    inter: DevPtr,
    /// Head scratch: [tokens, max(E, H)] and [tokens, head width].
    head_a: DevPtr,
    head_b: DevPtr,
    /// Sequence-level scratch [seqs, H] x3.
    seq_a: DevPtr,
    seq_b: DevPtr,
    seq_c: DevPtr,
    /// Zeros for LayerNorm without bias/residual: [tokens, max(E, H)].
    zeros: DevPtr,
}

pub struct Fp16Model<S: Seam> {
    seam: S,
    cfg: ModelConfig,
    word: DevPtr,
    position: DevPtr,
    token_type: DevPtr,
    emb_ln: DLayerNorm,
    project: Option<DLinear>,
    attention: Vec<DAttention>,
    ffn: Vec<DFfn>,
    schedule: Vec<(usize, usize)>,
    pooler: Option<DLinear>,
    head: DHead,
    /// Widest head output per token (vocab for MLM) and per sequence.
    head_token_width: usize,
    workspace: Mutex<Option<Workspace>>,
    /// Bytes of weights on the device.
    pub weight_bytes: usize,
}

fn f16_bytes(x: &[f32]) -> Vec<u8> {
    x.iter()
        .flat_map(|v| f16::from_f32(*v).to_le_bytes())
        .collect()
}

struct Uploader<'a, S: Seam> {
    seam: &'a S,
    bytes: usize,
}

impl<S: Seam> Uploader<'_, S> {
    fn tensor(&mut self, x: &[f32]) -> Result<DevPtr> {
        let b = f16_bytes(x);
        let p = self.seam.alloc(b.len().max(2))?;
        self.seam.upload(p, &b)?;
        self.bytes += b.len();
        Ok(p)
    }
    fn linear(&mut self, l: &Linear) -> Result<DLinear> {
        Ok(DLinear {
            w: self.tensor(&l.w)?,
            b: self.tensor(&l.b)?,
            in_dim: l.in_dim,
            out_dim: l.out_dim,
        })
    }
    fn ln(&mut self, l: &LayerNorm) -> Result<DLayerNorm> {
        Ok(DLayerNorm {
            gamma: self.tensor(&l.gamma)?,
            beta: self.tensor(&l.beta)?,
        })
    }
    fn mlm(&mut self, m: &crate::model::MlmHead) -> Result<DMlm> {
        Ok(DMlm {
            transform: self.linear(&m.transform)?,
            act: m.act,
            ln: self.ln(&m.ln)?,
            decoder: self.linear(&m.decoder)?,
        })
    }
}

impl<S: Seam> Fp16Model<S> {
    /// Uploads `w` as fp16 through `seam`.
    pub fn new(seam: S, w: &ModelWeights) -> Result<Self> {
        let c = &w.config;
        if c.head_dim > k::ATTN_MAX_HEAD_DIM {
            return Err(Error::Unsupported(format!(
                "head size {} (the attention kernel supports up to {})",
                c.head_dim,
                k::ATTN_MAX_HEAD_DIM
            )));
        }
        let mut u = Uploader {
            seam: &seam,
            bytes: 0,
        };
        let e = &w.embeddings;
        let word = u.tensor(&e.word)?;
        let position = u.tensor(&e.position)?;
        let token_type = if e.token_type.is_empty() {
            0
        } else {
            u.tensor(&e.token_type)?
        };
        let emb_ln = u.ln(&e.ln)?;
        let project = e.project.as_ref().map(|p| u.linear(p)).transpose()?;
        let attention = w
            .attention
            .iter()
            .map(|a| {
                Ok(DAttention {
                    qkv: u.linear(&a.qkv)?,
                    out: u.linear(&a.out)?,
                    ln: u.ln(&a.ln)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let ffn = w
            .ffn
            .iter()
            .map(|f| {
                Ok(DFfn {
                    up: u.linear(&f.up)?,
                    down: u.linear(&f.down)?,
                    ln: u.ln(&f.ln)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let pooler = w.pooler.as_ref().map(|p| u.linear(p)).transpose()?;
        let (head, head_token_width) = match &w.head {
            HeadWeights::None => (DHead::None, 0),
            HeadWeights::MaskedLm(m) => (DHead::MaskedLm(u.mlm(m)?), m.decoder.out_dim),
            HeadWeights::QuestionAnswering(l) => (DHead::QuestionAnswering(u.linear(l)?), 2),
            HeadWeights::TokenClassification(l) => {
                (DHead::TokenClassification(u.linear(l)?), l.out_dim)
            }
            HeadWeights::SequenceClassification(ClassifierHead::Pooled(l)) => {
                (DHead::Pooled(u.linear(l)?), 0)
            }
            HeadWeights::SequenceClassification(ClassifierHead::FirstToken {
                dense,
                act,
                out_proj,
            }) => (
                DHead::FirstToken {
                    dense: u.linear(dense)?,
                    act: *act,
                    out_proj: u.linear(out_proj)?,
                },
                0,
            ),
            HeadWeights::Discriminator {
                dense,
                act,
                prediction,
            } => (
                DHead::Discriminator {
                    dense: u.linear(dense)?,
                    act: *act,
                    prediction: u.linear(prediction)?,
                },
                1,
            ),
            HeadWeights::AlbertPreTraining { mlm, sop } => (
                DHead::AlbertPreTraining {
                    mlm: u.mlm(mlm)?,
                    sop: u.linear(sop)?,
                },
                mlm.decoder.out_dim,
            ),
        };
        let weight_bytes = u.bytes;
        Ok(Fp16Model {
            cfg: c.clone(),
            word,
            position,
            token_type,
            emb_ln,
            project,
            attention,
            ffn,
            schedule: w.schedule.clone(),
            pooler,
            head,
            head_token_width,
            workspace: Mutex::new(None),
            weight_bytes,
            seam,
        })
    }

    /// For the backend's device-wide calls (describe, profiler, events). Not
    /// public: launches and cuBLAS calls through it would bypass the
    /// workspace lock that `forward` holds.
    ///
    /// ```compile_fail
    /// fn outside(m: &bertrt::backend::fp16::Fp16Model<bertrt::backend::emu::EmuSeam>) {
    ///     let _ = m.seam(); // private to the crate
    /// }
    /// ```
    pub(crate) fn seam(&self) -> &S {
        &self.seam
    }

    /// Bytes of activations a batch of `tokens` tokens in `seqs` sequences needs.
    pub fn workspace_bytes(&self, tokens: usize, seqs: usize) -> usize {
        let c = &self.cfg;
        let (h, e, i) = (c.hidden_size, c.embedding_size, c.intermediate_size);
        let wide = e.max(h);
        let halves = tokens
            * (e + h + 3 * h + h + h + i + wide + self.head_token_width.max(1) + wide)
            + 3 * seqs * h.max(c.num_labels).max(2);
        halves * 2 + tokens * 12 + (2 * seqs + 2) * 4
    }

    fn ensure_workspace(
        &self,
        ws: &mut Option<Workspace>,
        tokens: usize,
        seqs: usize,
    ) -> Result<()> {
        if let Some(w) = ws {
            if w.tokens >= tokens && w.seqs >= seqs {
                return Ok(());
            }
        }
        if let Some(old) = ws.take() {
            for p in old.ptrs {
                self.seam.free(p)?;
            }
        }
        // Grow geometrically so a stream of slightly larger batches does not
        // reallocate every call.
        let (tokens, seqs) = (
            tokens.next_power_of_two().max(64),
            seqs.next_power_of_two().max(8),
        );
        let c = &self.cfg;
        let (h, e, i) = (c.hidden_size, c.embedding_size, c.intermediate_size);
        let wide = e.max(h);
        let ptrs = std::cell::RefCell::new(Vec::new());
        let a = |bytes: usize| -> Result<DevPtr> {
            let p = self.seam.alloc(bytes.max(4))?;
            ptrs.borrow_mut().push(p);
            Ok(p)
        };
        let half = 2;
        let seq_w = h.max(c.num_labels).max(2);
        let built = (|| -> Result<Workspace> {
            Ok(Workspace {
                tokens,
                seqs,
                ids: a(tokens * 4)?,
                pos_ids: a(tokens * 4)?,
                type_ids: a(tokens * 4)?,
                cu_seqlens: a((seqs + 1) * 4)?,
                first_rows: a(seqs * 4)?,
                emb: a(tokens * e * half)?,
                x: a(tokens * h * half)?,
                qkv: a(tokens * 3 * h * half)?,
                ctx: a(tokens * h * half)?,
                y: a(tokens * h * half)?,
                inter: a(tokens * i * half)?,
                head_a: a(tokens * wide * half)?,
                head_b: a(tokens * self.head_token_width.max(1) * half)?,
                seq_a: a(seqs * seq_w * half)?,
                seq_b: a(seqs * seq_w * half)?,
                seq_c: a(seqs * seq_w * half)?,
                zeros: a(tokens * wide * half)?,
                ptrs: Vec::new(),
            })
        })();
        let ptrs = ptrs.into_inner();
        match built {
            Ok(w) => {
                *ws = Some(Workspace { ptrs, ..w });
                Ok(())
            }
            Err(err) => {
                for p in ptrs {
                    self.seam.free(p)?;
                }
                // Tokens that fit in what is free now, at this model's bytes per token.
                let per_token = self.workspace_bytes(1024, 1).div_ceil(1024).max(1);
                let fit = self
                    .seam
                    .free_memory()
                    .map(|f| format!("; about {} tokens per batch would fit", f / per_token))
                    .unwrap_or_default();
                Err(Error::Device(format!(
                    "{err}; a batch of {tokens} tokens needs about {} MiB of activations beside \
                     {} MiB of weights{fit}",
                    self.workspace_bytes(tokens, seqs) >> 20,
                    self.weight_bytes >> 20
                )))
            }
        }
    }

    /// Runs `f` inside a profiler range named `name`.
    fn op<R>(&self, name: &str, f: impl FnOnce() -> Result<R>) -> Result<R> {
        self.seam.range_push(name);
        let r = f();
        self.seam.range_pop();
        r
    }

    fn gemm(&self, x: DevPtr, l: &DLinear, y: DevPtr, rows: usize) -> Result<()> {
        self.seam.gemm(x, l.w, y, rows, l.out_dim, l.in_dim)
    }

    fn bias_act(
        &self,
        x: DevPtr,
        bias: DevPtr,
        rows: usize,
        width: usize,
        act: k::ActCode,
    ) -> Result<()> {
        let n = rows * width;
        self.seam.launch(
            k::BiasActParams {
                x,
                bias,
                n: n as i64,
                width: width as i32,
                act,
            },
            k::elementwise_geometry(n),
        )
    }

    /// y = act(x W^T + b), `act` None adds the bias only.
    fn linear(
        &self,
        x: DevPtr,
        l: &DLinear,
        y: DevPtr,
        rows: usize,
        act: Option<Activation>,
    ) -> Result<()> {
        self.gemm(x, l, y, rows)?;
        self.bias_act(y, l.b, rows, l.out_dim, k::ActCode::of(act))
    }

    /// out = LN(x + bias + residual).
    #[allow(clippy::too_many_arguments)]
    fn add_bias_residual_layernorm(
        &self,
        x: DevPtr,
        bias: DevPtr,
        residual: DevPtr,
        ln: &DLayerNorm,
        out: DevPtr,
        rows: usize,
        width: usize,
    ) -> Result<()> {
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
                eps: self.cfg.layer_norm_eps,
            },
            k::add_bias_residual_layernorm_geometry(rows, width),
        )
    }

    fn mlm(&self, m: &DMlm, ws: &Workspace, t: usize) -> Result<Vec<f32>> {
        let e = m.transform.out_dim;
        // u = LN(act(x Wt^T + bt)); logits = u Wd^T + bd
        self.linear(ws.x, &m.transform, ws.head_a, t, Some(m.act))?;
        self.add_bias_residual_layernorm(ws.head_a, ws.zeros, ws.zeros, &m.ln, ws.head_a, t, e)?;
        self.linear(ws.head_a, &m.decoder, ws.head_b, t, None)?;
        self.read(ws.head_b, t * m.decoder.out_dim)
    }

    fn read(&self, p: DevPtr, n: usize) -> Result<Vec<f32>> {
        let mut b = vec![0u8; n * 2];
        self.seam.download(p, &mut b)?;
        Ok(b.chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect())
    }

    fn upload_u32(&self, p: DevPtr, v: &[u32]) -> Result<()> {
        self.seam.upload(p, bytemuck::cast_slice(v))
    }

    /// The encoder alone (embeddings and every layer; no pooler, no head),
    /// waiting for the device to finish: the last hidden states stay in the
    /// workspace, nothing is copied back. What `bertrt bench` times by default.
    pub fn encode(&self, batch: &Batch) -> Result<()> {
        let mut guard = self.workspace.lock().unwrap_or_else(|p| p.into_inner());
        self.run_encoder(&mut guard, batch)?;
        self.seam.synchronize()
    }

    /// Sizes the workspace for `batch`, uploads its ids and runs the encoder:
    /// the last hidden states end in the returned workspace's `x`.
    fn run_encoder<'w>(
        &self,
        guard: &'w mut Option<Workspace>,
        batch: &Batch,
    ) -> Result<&'w Workspace> {
        let c = &self.cfg;
        let (h, e) = (c.hidden_size, c.embedding_size);
        let t = batch.num_tokens();
        let s = batch.num_seqs();
        if t == 0 {
            return Err(Error::Input("empty batch".into()));
        }
        self.ensure_workspace(guard, t, s)?;
        let ws = guard.as_ref().expect("workspace allocated above");

        let cu: Vec<u32> = batch.cu_seqlens().iter().map(|&x| x as u32).collect();
        let first: Vec<u32> = cu[..s].to_vec();
        self.upload_u32(ws.ids, batch.input_ids())?;
        self.upload_u32(ws.pos_ids, batch.position_ids())?;
        self.upload_u32(ws.type_ids, batch.token_type_ids())?;
        self.upload_u32(ws.cu_seqlens, &cu)?;
        self.upload_u32(ws.first_rows, &first)?;

        // Embeddings: LN(word + position + type), then E -> H where factorized.
        let emb_out = if self.project.is_some() { ws.emb } else { ws.x };
        self.op("embeddings", || {
            self.seam.launch(
                k::EmbeddingsLayerNormParams {
                    word: self.word,
                    pos: self.position,
                    ty: self.token_type,
                    ids: ws.ids,
                    pos_ids: ws.pos_ids,
                    type_ids: ws.type_ids,
                    gamma: self.emb_ln.gamma,
                    beta: self.emb_ln.beta,
                    out: emb_out,
                    tokens: t as i32,
                    width: e as i32,
                    vocab: c.vocab_size as u32,
                    max_pos: c.max_position_embeddings as u32,
                    type_vocab: if self.token_type == 0 {
                        0
                    } else {
                        c.type_vocab_size as u32
                    },
                    eps: c.layer_norm_eps,
                },
                k::embeddings_layernorm_geometry(t, e),
            )?;
            if let Some(p) = &self.project {
                self.linear(ws.emb, p, ws.x, t, None)?;
            }
            Ok(())
        })?;

        let max_len = batch.max_seq_len();
        for (layer, &(ai, fi)) in self.schedule.iter().enumerate() {
            let (att, ffn) = (&self.attention[ai], &self.ffn[fi]);
            self.seam.range_push(&format!("layer {layer}"));
            // qkv = x Wqkv^T + b
            let r = self
                .op("qkv", || self.linear(ws.x, &att.qkv, ws.qkv, t, None))
                .and_then(|_| {
                    // ctx = softmax(Q K^T / sqrt(d)) V per sequence and head
                    self.op("attention", || {
                        self.seam.launch(
                            k::AttentionParams {
                                qkv: ws.qkv,
                                cu_seqlens: ws.cu_seqlens,
                                out: ws.ctx,
                                num_seqs: s as i32,
                                heads: c.num_heads as i32,
                                head_dim: c.head_dim as i32,
                                ld: k::attention_smem_ld(c.head_dim) as i32,
                                scale: 1.0 / (c.head_dim as f32).sqrt(),
                                _pad: 0,
                            },
                            k::attention_geometry(s, c.num_heads, c.head_dim, max_len),
                        )
                    })
                })
                // y = LN(ctx Wo^T + bo + x)
                .and_then(|_| self.op("out-proj", || self.gemm(ws.ctx, &att.out, ws.y, t)))
                .and_then(|_| {
                    self.op("layernorm", || {
                        self.add_bias_residual_layernorm(ws.y, att.out.b, ws.x, &att.ln, ws.y, t, h)
                    })
                })
                // x = LN(act(y W1^T + b1) W2^T + b2 + y)
                .and_then(|_| {
                    self.op("ffn1", || {
                        self.linear(ws.y, &ffn.up, ws.inter, t, Some(c.act))
                    })
                })
                .and_then(|_| self.op("ffn2", || self.gemm(ws.inter, &ffn.down, ws.x, t)))
                .and_then(|_| {
                    self.op("layernorm", || {
                        self.add_bias_residual_layernorm(
                            ws.x, ffn.down.b, ws.y, &ffn.ln, ws.x, t, h,
                        )
                    })
                });
            self.seam.range_pop();
            r?;
        }
        Ok(ws)
    }

    pub fn forward(&self, batch: &Batch) -> Result<ForwardOutput> {
        let h = self.cfg.hidden_size;
        let (t, s) = (batch.num_tokens(), batch.num_seqs());
        let mut guard = self.workspace.lock().unwrap_or_else(|p| p.into_inner());
        let ws = self.run_encoder(&mut guard, batch)?;

        // First token of each sequence, for the pooler and first-token heads.
        let gather_first = |out: DevPtr| {
            self.seam.launch(
                k::GatherRowsParams {
                    x: ws.x,
                    row_ids: ws.first_rows,
                    out,
                    n: s as i32,
                    rows: t as i32,
                    width: h as i32,
                    _pad: 0,
                },
                k::gather_rows_geometry(s),
            )
        };
        let pooled = match &self.pooler {
            Some(p) => {
                gather_first(ws.seq_a)?;
                self.linear(ws.seq_a, p, ws.seq_b, s, Some(Activation::Tanh))?;
                Some(self.read(ws.seq_b, s * h)?)
            }
            None => None,
        };
        let head = self.op("heads", || -> Result<HeadOutput> {
            Ok(match &self.head {
                DHead::None => HeadOutput::None,
                DHead::MaskedLm(m) => HeadOutput::TokenLogits(self.mlm(m, ws, t)?),
                DHead::QuestionAnswering(l) => {
                    self.linear(ws.x, l, ws.head_b, t, None)?;
                    let se = self.read(ws.head_b, t * 2)?;
                    HeadOutput::StartEnd {
                        start: se.iter().step_by(2).copied().collect(),
                        end: se.iter().skip(1).step_by(2).copied().collect(),
                    }
                }
                DHead::TokenClassification(l) => {
                    self.linear(ws.x, l, ws.head_b, t, None)?;
                    HeadOutput::TokenLogits(self.read(ws.head_b, t * l.out_dim)?)
                }
                DHead::Pooled(l) => {
                    // seq_b holds the pooler output computed above.
                    self.linear(ws.seq_b, l, ws.seq_c, s, None)?;
                    HeadOutput::SequenceLogits(self.read(ws.seq_c, s * l.out_dim)?)
                }
                DHead::FirstToken {
                    dense,
                    act,
                    out_proj,
                } => {
                    gather_first(ws.seq_a)?;
                    self.linear(ws.seq_a, dense, ws.seq_c, s, Some(*act))?;
                    self.linear(ws.seq_c, out_proj, ws.seq_a, s, None)?;
                    HeadOutput::SequenceLogits(self.read(ws.seq_a, s * out_proj.out_dim)?)
                }
                DHead::Discriminator {
                    dense,
                    act,
                    prediction,
                } => {
                    self.linear(ws.x, dense, ws.head_a, t, Some(*act))?;
                    self.linear(ws.head_a, prediction, ws.head_b, t, None)?;
                    HeadOutput::TokenLogits(self.read(ws.head_b, t)?)
                }
                DHead::AlbertPreTraining { mlm, sop } => {
                    let logits = self.mlm(mlm, ws, t)?;
                    self.linear(ws.seq_b, sop, ws.seq_c, s, None)?;
                    HeadOutput::PreTraining {
                        mlm: logits,
                        sop: self.read(ws.seq_c, s * 2)?,
                    }
                }
            })
        })?;
        let hidden = self.read(ws.x, t * h)?;
        self.seam.synchronize()?;
        Ok(ForwardOutput {
            hidden,
            pooled,
            head,
        })
    }
}

/// Fails with the geometry's problem before a launch would.
pub fn check_geometry(name: &str, g: &Geometry) -> Result<()> {
    let threads = g.block.0 as u64 * g.block.1 as u64 * g.block.2 as u64;
    if threads == 0 || threads > 1024 {
        return Err(Error::Device(format!("{name}: block of {threads} threads")));
    }
    if g.grid.1 > 65535 || g.grid.2 > 65535 {
        return Err(Error::Device(format!(
            "{name}: grid {:?} exceeds the y/z limit",
            g.grid
        )));
    }
    Ok(())
}

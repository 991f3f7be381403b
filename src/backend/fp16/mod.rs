//! The fp16 forward pass, written once against the launch [`Seam`]: weights
//! uploaded once as fp16 (the same [`ModelWeights`] types, with device
//! pointers as storage), one workspace sized for the largest batch seen and
//! reused, and each layer a straight list of launches in data-flow order.
//!
//! A forward pass makes one upload (every input, packed by `staging`), issues
//! everything on the seam's stream, queues its readbacks and waits once.
//! Small batches run as CUDA graphs: padded to a shape bucket, the encoder
//! is captured once per bucket and replayed (`staging::Bucket`).
//!
//! ALBERT's shared blocks are uploaded once; the schedule reuses their
//! pointers for every layer that shares them. A tied MLM decoder reads the
//! word embeddings' upload.

mod heads;
mod l2;
mod launch;
pub mod seam;
pub mod staging;
mod wanted;
mod workspace;

use crate::backend::kernels::{self as k, Geometry};
use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::model::{AttentionBlock, FfnBlock, ModelWeights};
use crate::output::ForwardOutput;
use half::f16;
pub use seam::{DevPtr, Epilogue, GraphId, Launch, Seam, Traffic, TrafficCounter};
use staging::{Bucket, Staged};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use workspace::{Buf, Widths, Workspace};

/// How `run_encoder` runs the encoder.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A graph per bucket where the batch fits one (and graphs are on), else eager.
    Auto,
    /// Padded to its bucket as for a graph, but launched eagerly.
    PaddedEager,
}

pub struct Fp16Model<S: Seam> {
    seam: S,
    /// The model with device pointers to fp16 tensors (0 for an absent table).
    w: ModelWeights<DevPtr>,
    widths: Widths,
    workspace: Mutex<Option<Workspace>>,
    /// Bytes of weights on the device.
    pub weight_bytes: usize,
    /// CUDA graphs for small batches (on unless turned off).
    graphs_on: AtomicBool,
    /// Graphs captured and replays, since load.
    captures: AtomicUsize,
    replays: AtomicUsize,
    /// Bytes of the readback buffer this forward has queued.
    readback_used: AtomicUsize,
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
        let mut weight_bytes = 0;
        let device = w.map(&mut |x: &Vec<f32>| -> Result<DevPtr> {
            if x.is_empty() {
                return Ok(0); // no token-type table
            }
            let b: Vec<u8> = x
                .iter()
                .flat_map(|v| f16::from_f32(*v).to_le_bytes())
                .collect();
            let p = seam.alloc(b.len())?;
            seam.upload(p, &b)?;
            weight_bytes += b.len();
            Ok(p)
        })?;
        Ok(Fp16Model {
            widths: Widths::of(c, w.head.token_width()),
            w: device,
            workspace: Mutex::new(None),
            weight_bytes,
            graphs_on: AtomicBool::new(true),
            captures: AtomicUsize::new(0),
            replays: AtomicUsize::new(0),
            readback_used: AtomicUsize::new(0),
            seam,
        })
    }

    /// Turns CUDA graphs for small batches on (the default) or off.
    pub fn set_graphs(&self, on: bool) {
        self.graphs_on.store(on, Ordering::Relaxed);
    }

    /// (graphs captured, graph replays) since load.
    pub fn graph_counts(&self) -> (usize, usize) {
        (
            self.captures.load(Ordering::Relaxed),
            self.replays.load(Ordering::Relaxed),
        )
    }

    /// The seam's copies and waits since it was opened.
    pub fn traffic(&self) -> Traffic {
        self.seam.traffic()
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
        self.widths.total_bytes(tokens, seqs)
    }

    /// The encoder alone (embeddings and every layer; no pooler, no head),
    /// waiting for the device to finish: the last hidden states stay in the
    /// workspace, nothing is copied back. What `bertrt bench` times by default.
    pub fn encode(&self, batch: &Batch) -> Result<()> {
        let mut guard = self.workspace.lock().unwrap_or_else(|p| p.into_inner());
        self.run_encoder(&mut guard, batch, &[], Mode::Auto)?;
        self.seam.synchronize()
    }

    /// Encoder, pooler and the architecture's head.
    pub fn forward(&self, batch: &Batch) -> Result<ForwardOutput> {
        self.forward_in(batch, Mode::Auto)
    }

    /// [`Fp16Model::forward`] on the batch padded to its graph bucket (the
    /// very launches a graph records), run eagerly: what a replay must equal
    /// bit for bit. An error for a batch too large for graphs.
    #[doc(hidden)]
    pub fn forward_padded_eager(&self, batch: &Batch) -> Result<ForwardOutput> {
        self.forward_in(batch, Mode::PaddedEager)
    }

    fn forward_in(&self, batch: &Batch, mode: Mode) -> Result<ForwardOutput> {
        let (t, s) = (batch.num_tokens(), batch.num_seqs());
        let mut guard = self.workspace.lock().unwrap_or_else(|p| p.into_inner());
        let ws = self.run_encoder(&mut guard, batch, &[], mode)?;
        let pooled = self.pooler(ws, t, s)?;
        let head = self.op("heads", || self.head(ws, t, s))?;
        let hidden = self.read(ws[Buf::Hidden], t * self.w.config.hidden_size)?;
        self.seam.synchronize()?;
        let fetched = self.fetch()?;
        Ok(ForwardOutput {
            hidden: hidden.values(&fetched),
            pooled: pooled.map(|p| p.values(&fetched)),
            head: head(&fetched),
        })
    }

    /// Sizes the workspace for `batch`, uploads its inputs (and `head_rows`,
    /// into `HeadRowIds`) in one copy and runs the encoder (eagerly, or as
    /// its bucket's graph): the last hidden states end in the workspace's
    /// `Hidden` (the batch's rows first).
    fn run_encoder<'w>(
        &self,
        slot: &'w mut Option<Workspace>,
        batch: &Batch,
        head_rows: &[usize],
        mode: Mode,
    ) -> Result<&'w Workspace> {
        let (t, s) = (batch.num_tokens(), batch.num_seqs());
        if t == 0 {
            return Err(Error::Input("empty batch".into()));
        }
        let bucket = match mode {
            Mode::Auto if self.graphs_on.load(Ordering::Relaxed) && self.seam.supports_graphs() => {
                Bucket::of(t, s)
            }
            Mode::Auto => None,
            Mode::PaddedEager => Some(Bucket::of(t, s).ok_or_else(|| {
                Error::Input(format!(
                    "{t} tokens in {s} sequences: too large for a graph"
                ))
            })?),
        };
        let staged = match bucket {
            Some(b) => Staged::padded(batch, b),
            None => Staged::exact(batch),
        }
        .with_head_rows(head_rows);
        let (st, ss) = (staged.tokens, staged.seqs);
        Workspace::ensure(slot, &self.seam, &self.widths, self.weight_bytes, st, ss)?;
        let Some(ws) = slot.as_mut() else {
            return Err(Error::Internal("workspace missing after ensure".into()));
        };
        ws.stage(&staged.layout);
        // No readback is pending: the previous forward waited for its own.
        self.seam
            .reserve_readback(self.widths.readback_bytes(t, s))?;
        self.readback_used.store(0, Ordering::Relaxed);
        self.seam.upload_async(ws[Buf::Staging], staged.bytes())?;

        match (bucket, mode) {
            (Some(b), Mode::Auto) => {
                let graph = match ws.graphs.get(&b) {
                    Some(&g) => g,
                    None => {
                        self.seam.begin_capture()?;
                        let recorded = self.encoder(ws, &staged);
                        let graph = self.seam.end_capture();
                        recorded?;
                        let graph = graph?;
                        ws.graphs.insert(b, graph);
                        self.captures.fetch_add(1, Ordering::Relaxed);
                        graph
                    }
                };
                self.seam.replay(graph)?;
                self.replays.fetch_add(1, Ordering::Relaxed);
            }
            _ => self.encoder(ws, &staged)?,
        }
        Ok(ws)
    }

    /// Embeddings and every layer, at the staged sizes.
    fn encoder(&self, ws: &Workspace, staged: &Staged) -> Result<()> {
        let t = staged.tokens;
        self.op("embeddings", || self.embeddings(ws, t))?;
        let attn = AttnWork {
            seqs: staged.seqs,
            max_len: staged.max_len,
            tiles: if self.tensor_core_attention() {
                staged.tiles
            } else {
                0
            },
        };
        for (layer, &(ai, fi)) in self.w.schedule.iter().enumerate() {
            self.seam.range_push(&format!("layer {layer}"));
            let r = self.layer(ws, &self.w.attention[ai], &self.w.ffn[fi], t, attn);
            self.seam.range_pop();
            r?;
        }
        Ok(())
    }

    /// hidden = LN(word + position + type), then E -> H where factorized.
    fn embeddings(&self, ws: &Workspace, t: usize) -> Result<()> {
        let (c, e) = (&self.w.config, &self.w.embeddings);
        let out = match e.project {
            Some(_) => ws[Buf::Embedded],
            None => ws[Buf::Hidden],
        };
        let (chunks, geometry) = k::layernorm_plan(t, c.embedding_size);
        self.seam.launch(
            k::EmbeddingsLayerNormParams {
                word: e.word,
                pos: e.position,
                ty: e.token_type,
                ids: ws[Buf::InputIds],
                pos_ids: ws[Buf::PositionIds],
                type_ids: ws[Buf::TokenTypeIds],
                gamma: e.ln.gamma,
                beta: e.ln.beta,
                out,
                tokens: t as i32,
                width: c.embedding_size as i32,
                vocab: c.vocab_size as u32,
                max_pos: c.max_position_embeddings as u32,
                type_vocab: if e.token_type == 0 {
                    0
                } else {
                    c.type_vocab_size as u32
                },
                eps: c.layer_norm_eps,
                chunks,
                _pad: 0,
            },
            geometry,
        )?;
        if let Some(p) = &e.project {
            self.linear(ws[Buf::Embedded], p, ws[Buf::Hidden], t, None)?;
        }
        Ok(())
    }

    /// One encoder layer, in place on `Hidden`.
    fn layer(
        &self,
        ws: &Workspace,
        att: &AttentionBlock<DevPtr>,
        ffn: &FfnBlock<DevPtr>,
        t: usize,
        attn: AttnWork,
    ) -> Result<()> {
        let c = &self.w.config;
        let h = c.hidden_size;
        let (x, y) = (ws[Buf::Hidden], ws[Buf::AttnOut]);
        // qkv = x Wqkv^T + b
        self.op("qkv", || self.linear(x, &att.qkv, ws[Buf::Qkv], t, None))?;
        // ctx = softmax(Q K^T / sqrt(d)) V per sequence and head
        self.op("attention", || self.attention(ws, attn))?;
        // y = LN(ctx Wo^T + bo + x)
        self.op("out-proj", || {
            self.gemm(ws[Buf::AttnContext], &att.out, y, t)
        })?;
        self.op("layernorm", || {
            self.add_bias_residual_layernorm(y, att.out.b, x, &att.ln, y, t, h)
        })?;
        // x = LN(act(y W1^T + b1) W2^T + b2 + y)
        self.op("ffn1", || {
            self.linear(y, &ffn.up, ws[Buf::FfnInter], t, Some(c.act))
        })?;
        self.op("ffn2", || self.gemm(ws[Buf::FfnInter], &ffn.down, x, t))?;
        self.op("layernorm", || {
            self.add_bias_residual_layernorm(x, ffn.down.b, y, &ffn.ln, x, t, h)
        })
    }
}

/// What a layer's attention launch needs to know about the batch.
#[derive(Clone, Copy)]
struct AttnWork {
    seqs: usize,
    max_len: usize,
    /// attention_tc's query tiles (uploaded to `AttnTiles`); 0 when the
    /// head size has no tensor-core instance.
    tiles: usize,
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

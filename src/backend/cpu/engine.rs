//! The f32 CPU forward pass over a packed batch, op by op in data-flow order.

use super::fast::{choose_path, FastEncoder, GemmPath, Prepacked};
use super::ops;
use crate::batch::Batch;
use crate::config::Activation;
use crate::error::{Error, Result};
use crate::model::{ClassifierHead, HeadWeights, Linear, MlmHead, ModelWeights};
use crate::options::Dtype;
use crate::output::{ForwardOutput, HeadOutput};

pub struct CpuEngine {
    pub weights: ModelWeights,
    /// The engine's own threads when a count was asked for; else rayon's
    /// global pool (one thread per logical CPU).
    pool: Option<rayon::ThreadPool>,
    /// The encoder on AVX-512 tiles; None on the portable path.
    fast: Option<FastEncoder>,
    path: GemmPath,
    /// Why the path differs from what was asked, when it does.
    pub note: Option<String>,
}

/// y = x W^T + b for `[rows, in]` x.
fn linear(x: &[f32], l: &Linear) -> Vec<f32> {
    let rows = x.len() / l.in_dim;
    let mut y = vec![0f32; rows * l.out_dim];
    ops::linear(x, &l.w, Some(&l.b), l.in_dim, &mut y);
    y
}

fn linear_act(x: &[f32], l: &Linear, a: Activation) -> Vec<f32> {
    let rows = x.len() / l.in_dim;
    let mut y = vec![0f32; rows * l.out_dim];
    ops::linear(x, &l.w, None, l.in_dim, &mut y);
    ops::bias_act(&mut y, &l.b, a);
    y
}

impl CpuEngine {
    /// f32 on the fastest path this CPU has, on rayon's global pool.
    pub fn new(weights: ModelWeights) -> Self {
        Self::with_options(weights, Dtype::F32, None).expect("f32 on the global pool cannot fail")
    }

    /// f32 on the portable path: the plain `ops` forward, the reference the
    /// fast paths are tested against.
    pub fn reference(weights: ModelWeights) -> Self {
        CpuEngine {
            weights,
            pool: None,
            fast: None,
            path: GemmPath::Portable,
            note: None,
        }
    }

    /// An engine computing in `dtype` (f32 or bf16) on `threads` threads.
    pub fn with_options(
        weights: ModelWeights,
        dtype: Dtype,
        threads: Option<usize>,
    ) -> Result<Self> {
        Self::with_prepacked(weights, dtype, threads, None)
    }

    /// [`Self::with_options`] on weights read with `pre`'s hook
    /// ([`Prepacked::for_dtype`] of the same dtype): its linears are used as
    /// packed.
    pub fn with_prepacked(
        weights: ModelWeights,
        dtype: Dtype,
        threads: Option<usize>,
        pre: Option<Prepacked>,
    ) -> Result<Self> {
        if !dtype.on_cpu() {
            return Err(Error::Input(format!(
                "dtype {dtype} is not available on device cpu (use f32 or bf16)"
            )));
        }
        let (path, note) = choose_path(dtype == Dtype::Bf16);
        if let Some(p) = &pre {
            if p.path() != path {
                return Err(Error::Internal(format!(
                    "weights packed for \"{}\" while loading, but the engine chose \"{path}\"",
                    p.path()
                )));
            }
        }
        let mut engine = Self::build(weights, path, threads, pre)?;
        engine.note = note;
        Ok(engine)
    }

    /// An engine on exactly `path` (tests and benchmarks compare the paths
    /// one CPU can run); an error names the path this CPU cannot run.
    pub fn with_path(
        weights: ModelWeights,
        path: GemmPath,
        threads: Option<usize>,
    ) -> Result<Self> {
        Self::build(weights, path, threads, None)
    }

    fn build(
        mut weights: ModelWeights,
        path: GemmPath,
        threads: Option<usize>,
        pre: Option<Prepacked>,
    ) -> Result<Self> {
        if !path.runs_here() {
            return Err(Error::Device(format!(
                "the CPU path \"{path}\" needs instructions this CPU does not have"
            )));
        }
        let pool = match threads {
            None => None,
            Some(n) => Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .thread_name(|i| format!("bertrt-cpu-{i}"))
                    .build()
                    .map_err(|e| Error::Device(format!("cannot start {n} CPU threads: {e}")))?,
            ),
        };
        let fast = (path != GemmPath::Portable).then(|| FastEncoder::take(&mut weights, path, pre));
        Ok(CpuEngine {
            weights,
            pool,
            fast,
            path,
            note: None,
        })
    }

    pub fn dtype(&self) -> Dtype {
        if self.path.is_bf16() {
            Dtype::Bf16
        } else {
            Dtype::F32
        }
    }

    /// The GEMM code this engine runs.
    pub fn path(&self) -> GemmPath {
        self.path
    }

    /// Runs `f` on the engine's threads, so every rayon call inside honours
    /// the thread count.
    fn on_threads<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(p) => p.install(f),
            None => f(),
        }
    }

    pub fn threads(&self) -> usize {
        self.on_threads(rayon::current_num_threads)
    }

    pub fn describe(&self) -> String {
        format!("cpu ({}, {} threads)", self.path, self.threads())
    }

    /// Final hidden states `[tokens, H]` of the encoder.
    pub fn encode(&self, batch: &Batch) -> Vec<f32> {
        self.on_threads(|| self.encode_here(batch))
    }

    fn encode_here(&self, batch: &Batch) -> Vec<f32> {
        if let Some(f) = &self.fast {
            return f.encode(&self.weights, batch);
        }
        let w = &self.weights;
        let c = &w.config;
        let h = c.hidden_size;
        let t = batch.num_tokens();

        let emb = embeddings_of(w, batch);
        let mut x = match &w.embeddings.project {
            Some(p) => linear(&emb, p),
            None => emb,
        };

        let mut ctx = vec![0f32; t * h];
        for &(ai, fi) in &w.schedule {
            let (att, ffn) = (&w.attention[ai], &w.ffn[fi]);
            // Attention: qkv = x Wqkv^T + b; ctx = softmax(QK^T/sqrt(d)) V.
            let qkv = linear(&x, &att.qkv);
            ops::attention_packed(&qkv, batch.cu_seqlens(), c.num_heads, c.head_dim, &mut ctx);
            // x = LN(ctx Wo^T + bo + x)
            let mut y = vec![0f32; t * h];
            ops::linear(&ctx, &att.out.w, None, h, &mut y);
            ops::add_bias_residual_layernorm(
                &mut y,
                &att.out.b,
                &x,
                &att.ln.gamma,
                &att.ln.beta,
                c.layer_norm_eps,
            );
            // FFN: x = LN(act(y W1^T + b1) W2^T + b2 + y)
            let u = linear_act(&y, &ffn.up, c.act);
            let mut z = vec![0f32; t * h];
            ops::linear(&u, &ffn.down.w, None, ffn.down.in_dim, &mut z);
            ops::add_bias_residual_layernorm(
                &mut z,
                &ffn.down.b,
                &y,
                &ffn.ln.gamma,
                &ffn.ln.beta,
                c.layer_norm_eps,
            );
            x = z;
        }
        x
    }

    /// Encoder, pooler and the architecture's head.
    pub fn forward(&self, batch: &Batch) -> Result<ForwardOutput> {
        self.on_threads(|| self.forward_here(batch))
    }

    fn forward_here(&self, batch: &Batch) -> Result<ForwardOutput> {
        let w = &self.weights;
        let h = w.config.hidden_size;
        let hidden = self.encode_here(batch);
        let first = first_tokens(&hidden, batch, h);
        let pooled = w
            .pooler
            .as_ref()
            .map(|p| linear_act(&first, p, Activation::Tanh));
        let mlm = |m: &MlmHead| -> Vec<f32> {
            let mut u = linear_act(&hidden, &m.transform, m.act);
            ops::layer_norm_rows(&mut u, &m.ln.gamma, &m.ln.beta, w.config.layer_norm_eps);
            let d = &m.decoder;
            let weight = d.w.as_ref().unwrap_or(&w.embeddings.word);
            let mut logits = vec![0f32; (u.len() / d.in_dim) * d.out_dim];
            ops::linear(&u, weight, Some(&d.b), d.in_dim, &mut logits);
            logits
        };
        let head = match &w.head {
            HeadWeights::None => HeadOutput::None,
            HeadWeights::MaskedLm(m) => HeadOutput::TokenLogits(mlm(m)),
            HeadWeights::QuestionAnswering(l) => {
                let se = linear(&hidden, l);
                HeadOutput::StartEnd {
                    start: se.iter().step_by(2).copied().collect(),
                    end: se.iter().skip(1).step_by(2).copied().collect(),
                }
            }
            HeadWeights::TokenClassification(l) => HeadOutput::TokenLogits(linear(&hidden, l)),
            HeadWeights::SequenceClassification(ClassifierHead::Pooled(l)) => {
                HeadOutput::SequenceLogits(linear(pooled.as_ref().expect("checked at load"), l))
            }
            HeadWeights::SequenceClassification(ClassifierHead::FirstToken {
                dense,
                act,
                out_proj,
            }) => HeadOutput::SequenceLogits(linear(&linear_act(&first, dense, *act), out_proj)),
            HeadWeights::Discriminator {
                dense,
                act,
                prediction,
            } => HeadOutput::TokenLogits(linear(&linear_act(&hidden, dense, *act), prediction)),
            HeadWeights::AlbertPreTraining { mlm: m, sop } => HeadOutput::PreTraining {
                mlm: mlm(m),
                sop: linear(pooled.as_ref().expect("checked at load"), sop),
            },
        };
        Ok(ForwardOutput {
            hidden,
            pooled,
            head,
        })
    }
}

/// The embedding layer's output `[tokens, E]` for a packed batch.
pub(super) fn embeddings_of(w: &ModelWeights, batch: &Batch) -> Vec<f32> {
    let mut emb = vec![0f32; batch.num_tokens() * w.config.embedding_size];
    ops::embeddings(
        &w.embeddings.word,
        &w.embeddings.position,
        &w.embeddings.token_type,
        batch.input_ids(),
        batch.position_ids(),
        batch.token_type_ids(),
        &w.embeddings.ln.gamma,
        &w.embeddings.ln.beta,
        w.config.layer_norm_eps,
        &mut emb,
    );
    emb
}

/// Rows of each sequence's first token: `[seqs, H]`.
fn first_tokens(hidden: &[f32], batch: &Batch, h: usize) -> Vec<f32> {
    (0..batch.num_seqs())
        .flat_map(|s| {
            let r = batch.cu_seqlens()[s];
            hidden[r * h..(r + 1) * h].iter().copied()
        })
        .collect()
}

//! What a forward pass returns, in the packed layout of its batch, and what a
//! caller may ask it for instead of everything ([`Want`] -> [`Wanted`]).

use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::tasks::embed::Pooling;

/// Outputs of one forward pass. Per-token arrays are `[tokens, width]` in the
/// batch's packed order; per-sequence arrays are `[seqs, width]`.
#[derive(Debug, Clone)]
pub struct ForwardOutput {
    /// last_hidden_state, `[tokens, H]`.
    pub hidden: Vec<f32>,
    /// pooler_output (tanh pooler), `[seqs, H]`, where the model has one.
    pub pooled: Option<Vec<f32>>,
    pub head: HeadOutput,
}

#[derive(Debug, Clone)]
pub enum HeadOutput {
    None,
    /// MLM `[tokens, vocab]`, token classification `[tokens, labels]`,
    /// ELECTRA discriminator `[tokens, 1]`.
    TokenLogits(Vec<f32>),
    /// Sequence classification `[seqs, labels]`.
    SequenceLogits(Vec<f32>),
    /// Extractive QA, `[tokens]` each.
    StartEnd {
        start: Vec<f32>,
        end: Vec<f32>,
    },
    /// AlbertForPreTraining: MLM `[tokens, vocab]` and sentence order `[seqs, 2]`.
    PreTraining {
        mlm: Vec<f32>,
        sop: Vec<f32>,
    },
}

/// What a caller needs from a forward, so a device backend computes and
/// copies back only that (e.g. fill-mask: the mask rows' logits, not
/// `[tokens, vocab]`).
#[derive(Debug, Clone, PartialEq)]
pub enum Want {
    /// Hidden states, pooler output and head output: [`ForwardOutput`].
    Everything,
    /// The head's output alone.
    Head,
    /// The head's per-token logits at these packed token rows only,
    /// `[rows.len(), width]` in this order (for an MLM head: the mask rows'
    /// vocabulary logits; AlbertForPreTraining's sentence-order logits are
    /// left out).
    TokenLogitsAt(Vec<usize>),
    /// One vector per sequence (per token for [`Pooling::None`]), `[n, H]`,
    /// L2-normalized when asked, as `tasks::embed` defines them.
    Embeddings { pooling: Pooling, normalize: bool },
}

/// A forward's answer to a [`Want`], variant for variant.
#[derive(Debug, Clone)]
pub enum Wanted {
    Everything(ForwardOutput),
    Head(HeadOutput),
    TokenLogitsAt(Vec<f32>),
    Embeddings(Vec<f32>),
}

impl Wanted {
    fn mismatch(self, asked: &str) -> Error {
        let got = match self {
            Wanted::Everything(_) => "everything",
            Wanted::Head(_) => "the head output",
            Wanted::TokenLogitsAt(_) => "token logits",
            Wanted::Embeddings(_) => "embeddings",
        };
        Error::Internal(format!("asked the forward for {asked}, got {got}"))
    }
    pub fn into_everything(self) -> Result<ForwardOutput> {
        match self {
            Wanted::Everything(o) => Ok(o),
            other => Err(other.mismatch("everything")),
        }
    }
    pub fn into_head(self) -> Result<HeadOutput> {
        match self {
            Wanted::Head(h) => Ok(h),
            other => Err(other.mismatch("the head output")),
        }
    }
    pub fn into_token_logits(self) -> Result<Vec<f32>> {
        match self {
            Wanted::TokenLogitsAt(v) => Ok(v),
            other => Err(other.mismatch("token logits")),
        }
    }
    pub fn into_embeddings(self) -> Result<Vec<f32>> {
        match self {
            Wanted::Embeddings(v) => Ok(v),
            other => Err(other.mismatch("embeddings")),
        }
    }
}

/// The error for a pooler asked of a model without one (both paths say it).
pub fn no_pooler() -> Error {
    Error::Input(
        "this model has no pooler (its HF class builds none, or its weights hold none); \
         use cls or mean pooling"
            .into(),
    )
}

/// Fails on a token row outside a batch of `tokens` tokens, or on more rows
/// than tokens.
pub fn check_token_rows(rows: &[usize], tokens: usize) -> Result<()> {
    if rows.len() > tokens {
        return Err(Error::Input(format!(
            "{} token rows asked of a batch of {tokens} tokens",
            rows.len()
        )));
    }
    match rows.iter().find(|&&r| r >= tokens) {
        Some(r) => Err(Error::Input(format!(
            "token row {r} is outside the batch ({tokens} tokens)"
        ))),
        None => Ok(()),
    }
}

/// The host's answer to `want` from a full forward: what a backend without
/// its own reductions returns, and the reference the device's reductions
/// are checked against.
pub fn reduce(out: ForwardOutput, batch: &Batch, want: &Want) -> Result<Wanted> {
    Ok(match want {
        Want::Everything => Wanted::Everything(out),
        Want::Head => Wanted::Head(out.head),
        Want::TokenLogitsAt(rows) => {
            let t = batch.num_tokens();
            check_token_rows(rows, t)?;
            let (HeadOutput::TokenLogits(all) | HeadOutput::PreTraining { mlm: all, .. }) =
                &out.head
            else {
                return Err(Error::Input(
                    "this model's head has no per-token logits".into(),
                ));
            };
            let w = all.len() / t;
            Wanted::TokenLogitsAt(
                rows.iter()
                    .flat_map(|&r| &all[r * w..(r + 1) * w])
                    .copied()
                    .collect(),
            )
        }
        Want::Embeddings { pooling, normalize } => {
            Wanted::Embeddings(embeddings_of(&out, batch, *pooling, *normalize)?)
        }
    })
}

/// [`Want::Embeddings`]'s rows from a full forward of `batch`, on the host.
pub fn embeddings_of(
    out: &ForwardOutput,
    batch: &Batch,
    pooling: Pooling,
    normalize: bool,
) -> Result<Vec<f32>> {
    let h = out.hidden.len() / batch.num_tokens();
    let cu = batch.cu_seqlens();
    Ok(match pooling {
        Pooling::Cls => pool_rows(&out.hidden, h, PoolRows::First(cu), normalize),
        Pooling::Mean => pool_rows(&out.hidden, h, PoolRows::Mean(cu), normalize),
        Pooling::Pooler => {
            // Both backends compute a pooler exactly when the model has one.
            let p = out.pooled.as_ref().ok_or_else(no_pooler)?;
            pool_rows(p, h, PoolRows::Each, normalize)
        }
        Pooling::None => pool_rows(&out.hidden, h, PoolRows::Each, normalize),
    })
}

/// Which rows of `x` make each output row of [`pool_rows`] (and of the
/// pool_normalize kernel, whose modes these are).
#[derive(Debug, Clone, Copy)]
pub enum PoolRows<'a> {
    /// Output `i` is row `cu[i]` (each segment's first row).
    First(&'a [usize]),
    /// Output `i` is the mean of rows `cu[i]..cu[i + 1]`.
    Mean(&'a [usize]),
    /// Output `i` is row `i`.
    Each,
}

/// Pooled rows of `x` (`[rows, width]`), each then divided by
/// `max(||v||, 1e-12)` when `normalize` (torch.nn.functional.normalize).
/// Sums in f64. The CPU reference of kernels/pool_normalize.cu.
pub fn pool_rows(x: &[f32], width: usize, rows: PoolRows, normalize: bool) -> Vec<f32> {
    let row = |r: usize| &x[r * width..(r + 1) * width];
    let mut out: Vec<Vec<f32>> = match rows {
        PoolRows::First(cu) => cu[..cu.len() - 1]
            .iter()
            .map(|&r| row(r).to_vec())
            .collect(),
        PoolRows::Mean(cu) => cu
            .windows(2)
            .map(|s| {
                let mut acc = vec![0f64; width];
                for r in s[0]..s[1] {
                    for (a, &v) in acc.iter_mut().zip(row(r)) {
                        *a += v as f64;
                    }
                }
                let n = (s[1] - s[0]) as f64;
                acc.iter().map(|a| (a / n) as f32).collect()
            })
            .collect(),
        PoolRows::Each => x.chunks_exact(width).map(|r| r.to_vec()).collect(),
    };
    if normalize {
        for v in &mut out {
            let n = v
                .iter()
                .map(|x| (*x as f64).powi(2))
                .sum::<f64>()
                .sqrt()
                .max(1e-12);
            v.iter_mut().for_each(|x| *x = (*x as f64 / n) as f32);
        }
    }
    out.concat()
}

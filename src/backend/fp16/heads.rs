//! The pooler and the task heads on the device, after the encoder. Their
//! reads are queued ([`Readback`]); the results are built after the wait.

use super::launch::{Pending, Readback};
use super::workspace::{Buf, Workspace};
use super::{DevPtr, Fp16Model, Seam};
use crate::config::Activation;
use crate::error::{Error, Result};
use crate::model::{ClassifierHead, HeadWeights, Linear, MlmHead};
use crate::output::HeadOutput;

impl<S: Seam> Fp16Model<S> {
    /// Pooled = tanh(FirstTokens Wp^T + bp), read back, where the model has
    /// a pooler.
    pub(super) fn pooler(&self, ws: &Workspace, t: usize, s: usize) -> Result<Option<Readback>> {
        if !self.run_pooler(ws, t, s)? {
            return Ok(None);
        }
        Ok(Some(
            self.read(ws[Buf::Pooled], s * self.w.config.hidden_size)?,
        ))
    }

    /// Pooled = tanh(FirstTokens Wp^T + bp) on the device; false (and
    /// nothing run) when the model has no pooler.
    pub(super) fn run_pooler(&self, ws: &Workspace, t: usize, s: usize) -> Result<bool> {
        let Some(p) = &self.w.pooler else {
            return Ok(false);
        };
        self.gather_first_tokens(ws, t, s)?;
        self.linear(
            ws[Buf::FirstTokens],
            p,
            ws[Buf::Pooled],
            s,
            Some(Activation::Tanh),
        )?;
        Ok(true)
    }

    /// Whether the head reads `Pooled` (so the pooler must run first).
    pub(super) fn head_reads_pooler(&self) -> bool {
        matches!(
            self.w.head,
            HeadWeights::SequenceClassification(ClassifierHead::Pooled(_))
                | HeadWeights::AlbertPreTraining { .. }
        )
    }

    /// The head's output; `Pooled` already holds the pooler output where
    /// [`Self::head_reads_pooler`].
    pub(super) fn head(&self, ws: &Workspace, t: usize, s: usize) -> Result<Pending<HeadOutput>> {
        let (x, logits) = (ws[Buf::Hidden], ws[Buf::HeadLogits]);
        if let Some(l) = self.token_logits(ws, x, t)? {
            return Ok(match &self.w.head {
                HeadWeights::AlbertPreTraining { sop, .. } => {
                    self.linear(ws[Buf::Pooled], sop, ws[Buf::SeqLogits], s, None)?;
                    let sop = self.read(ws[Buf::SeqLogits], s * 2)?;
                    Box::new(move |f| HeadOutput::PreTraining {
                        mlm: l.values(f),
                        sop: sop.values(f),
                    })
                }
                _ => Box::new(move |f| HeadOutput::TokenLogits(l.values(f))),
            });
        }
        let seq_logits = |r: Readback| -> Pending<HeadOutput> {
            Box::new(move |f| HeadOutput::SequenceLogits(r.values(f)))
        };
        Ok(match &self.w.head {
            HeadWeights::QuestionAnswering(l) => {
                self.linear(x, l, logits, t, None)?;
                let se = self.read(logits, t * 2)?;
                Box::new(move |f| {
                    let se = se.values(f);
                    HeadOutput::StartEnd {
                        start: se.iter().step_by(2).copied().collect(),
                        end: se.iter().skip(1).step_by(2).copied().collect(),
                    }
                })
            }
            HeadWeights::SequenceClassification(ClassifierHead::Pooled(l)) => {
                self.linear(ws[Buf::Pooled], l, ws[Buf::SeqLogits], s, None)?;
                seq_logits(self.read(ws[Buf::SeqLogits], s * l.out_dim)?)
            }
            HeadWeights::SequenceClassification(ClassifierHead::FirstToken {
                dense,
                act,
                out_proj,
            }) => {
                self.gather_first_tokens(ws, t, s)?;
                self.linear(
                    ws[Buf::FirstTokens],
                    dense,
                    ws[Buf::SeqScratch],
                    s,
                    Some(*act),
                )?;
                self.linear(ws[Buf::SeqScratch], out_proj, ws[Buf::SeqLogits], s, None)?;
                seq_logits(self.read(ws[Buf::SeqLogits], s * out_proj.out_dim)?)
            }
            HeadWeights::None => Box::new(|_| HeadOutput::None),
            HeadWeights::MaskedLm(_)
            | HeadWeights::TokenClassification(_)
            | HeadWeights::Discriminator { .. }
            | HeadWeights::AlbertPreTraining { .. } => {
                return Err(Error::Internal(
                    "a token-level head gave no token logits".into(),
                ))
            }
        })
    }

    /// The per-token logits of the token-level heads (MLM, also
    /// AlbertForPreTraining's; token classification; ELECTRA discriminator)
    /// over `n` rows of `x` (`Hidden`, or rows gathered from it), queued for
    /// reading back `[n, width]`; None for the other heads.
    pub(super) fn token_logits(
        &self,
        ws: &Workspace,
        x: DevPtr,
        n: usize,
    ) -> Result<Option<Readback>> {
        let logits = ws[Buf::HeadLogits];
        Ok(Some(match &self.w.head {
            HeadWeights::MaskedLm(m) | HeadWeights::AlbertPreTraining { mlm: m, .. } => {
                self.mlm(m, ws, x, n)?
            }
            HeadWeights::TokenClassification(l) => {
                self.linear(x, l, logits, n, None)?;
                self.read(logits, n * l.out_dim)?
            }
            HeadWeights::Discriminator {
                dense,
                act,
                prediction,
            } => {
                self.linear(x, dense, ws[Buf::HeadTransform], n, Some(*act))?;
                self.linear(ws[Buf::HeadTransform], prediction, logits, n, None)?;
                self.read(logits, n)?
            }
            _ => return Ok(None),
        }))
    }

    /// u = LN(act(x Wt^T + bt)); logits = u Wd^T + bd, Wd the word
    /// embeddings when tied; over `n` rows of `x`.
    fn mlm(&self, m: &MlmHead<DevPtr>, ws: &Workspace, x: DevPtr, n: usize) -> Result<Readback> {
        let u = ws[Buf::HeadTransform];
        self.linear(x, &m.transform, u, n, Some(m.act))?;
        let e = m.transform.out_dim;
        // A plain LayerNorm: no bias, no residual (null pointers).
        self.add_bias_residual_layernorm(u, 0, 0, &m.ln, u, n, e)?;
        let d = &m.decoder;
        let decoder = Linear {
            w: d.w.unwrap_or(self.w.embeddings.word),
            b: d.b,
            in_dim: d.in_dim,
            out_dim: d.out_dim,
        };
        self.linear(u, &decoder, ws[Buf::HeadLogits], n, None)?;
        self.read(ws[Buf::HeadLogits], n * d.out_dim)
    }
}

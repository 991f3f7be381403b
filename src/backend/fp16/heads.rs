//! The pooler and the task heads on the device, after the encoder. Their
//! reads are queued ([`Readback`]); the results are built after the wait.

use super::launch::{Pending, Readback};
use super::workspace::{Buf, Workspace};
use super::{DevPtr, Fp16Model, Seam};
use crate::config::Activation;
use crate::error::Result;
use crate::model::{ClassifierHead, HeadWeights, Linear, MlmHead};
use crate::output::HeadOutput;

impl<S: Seam> Fp16Model<S> {
    /// Pooled = tanh(FirstTokens Wp^T + bp), where the model has a pooler.
    pub(super) fn pooler(&self, ws: &Workspace, t: usize, s: usize) -> Result<Option<Readback>> {
        let Some(p) = &self.w.pooler else {
            return Ok(None);
        };
        self.gather_first_tokens(ws, t, s)?;
        self.linear(
            ws[Buf::FirstTokens],
            p,
            ws[Buf::Pooled],
            s,
            Some(Activation::Tanh),
        )?;
        Ok(Some(
            self.read(ws[Buf::Pooled], s * self.w.config.hidden_size)?,
        ))
    }

    /// The head's output; `Pooled` already holds the pooler output.
    pub(super) fn head(&self, ws: &Workspace, t: usize, s: usize) -> Result<Pending<HeadOutput>> {
        let (x, logits) = (ws[Buf::Hidden], ws[Buf::HeadLogits]);
        let token_logits = |r: Readback| -> Pending<HeadOutput> {
            Box::new(move |f| HeadOutput::TokenLogits(r.values(f)))
        };
        let seq_logits = |r: Readback| -> Pending<HeadOutput> {
            Box::new(move |f| HeadOutput::SequenceLogits(r.values(f)))
        };
        Ok(match &self.w.head {
            HeadWeights::None => Box::new(|_| HeadOutput::None),
            HeadWeights::MaskedLm(m) => token_logits(self.mlm(m, ws, t)?),
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
            HeadWeights::TokenClassification(l) => {
                self.linear(x, l, logits, t, None)?;
                token_logits(self.read(logits, t * l.out_dim)?)
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
            HeadWeights::Discriminator {
                dense,
                act,
                prediction,
            } => {
                self.linear(x, dense, ws[Buf::HeadTransform], t, Some(*act))?;
                self.linear(ws[Buf::HeadTransform], prediction, logits, t, None)?;
                token_logits(self.read(logits, t)?)
            }
            HeadWeights::AlbertPreTraining { mlm, sop } => {
                let mlm = self.mlm(mlm, ws, t)?;
                self.linear(ws[Buf::Pooled], sop, ws[Buf::SeqLogits], s, None)?;
                let sop = self.read(ws[Buf::SeqLogits], s * 2)?;
                Box::new(move |f| HeadOutput::PreTraining {
                    mlm: mlm.values(f),
                    sop: sop.values(f),
                })
            }
        })
    }

    /// u = LN(act(x Wt^T + bt)); logits = u Wd^T + bd, Wd the word
    /// embeddings when tied.
    fn mlm(&self, m: &MlmHead<DevPtr>, ws: &Workspace, t: usize) -> Result<Readback> {
        let u = ws[Buf::HeadTransform];
        self.linear(ws[Buf::Hidden], &m.transform, u, t, Some(m.act))?;
        let e = m.transform.out_dim;
        // A plain LayerNorm: no bias, no residual (null pointers).
        self.add_bias_residual_layernorm(u, 0, 0, &m.ln, u, t, e)?;
        let d = &m.decoder;
        let decoder = Linear {
            w: d.w.unwrap_or(self.w.embeddings.word),
            b: d.b,
            in_dim: d.in_dim,
            out_dim: d.out_dim,
        };
        self.linear(u, &decoder, ws[Buf::HeadLogits], t, None)?;
        self.read(ws[Buf::HeadLogits], t * d.out_dim)
    }
}

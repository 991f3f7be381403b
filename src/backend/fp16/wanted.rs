//! A forward that computes and copies back only what the caller wants
//! ([`Want`]): the encoder, then the asked-for reduction on the device.

use super::launch::{Pending, Readback};
use super::workspace::{Buf, Workspace};
use super::{Fp16Model, Mode, Seam};
use crate::backend::kernels as k;
use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::output::{check_token_rows, no_pooler, Want, Wanted};
use crate::tasks::embed::Pooling;

impl<S: Seam> Fp16Model<S> {
    /// Only what `want` asks for; [`Want::Everything`] is [`Fp16Model::forward`].
    pub fn forward_want(&self, batch: &Batch, want: &Want) -> Result<Wanted> {
        let (t, s) = (batch.num_tokens(), batch.num_seqs());
        match want {
            Want::Everything => return self.forward(batch).map(Wanted::Everything),
            Want::TokenLogitsAt(rows) => check_token_rows(rows, t)?,
            Want::Embeddings {
                pooling: Pooling::Pooler,
                ..
            } if self.w.pooler.is_none() => return Err(no_pooler()),
            _ => {}
        }
        let mut guard = self.workspace.lock().unwrap_or_else(|p| p.into_inner());
        let head_rows = match want {
            Want::TokenLogitsAt(rows) => rows.as_slice(),
            _ => &[],
        };
        let ws = self.run_encoder(&mut guard, batch, head_rows, Mode::Auto)?;
        let out: Pending<Wanted> = match want {
            Want::Everything => return Err(Error::Internal("Want::Everything reduced".into())),
            Want::Head => {
                if self.head_reads_pooler() {
                    self.run_pooler(ws, t, s)?;
                }
                let head = self.op("heads", || self.head(ws, t, s))?;
                Box::new(move |f| Wanted::Head(head(f)))
            }
            Want::TokenLogitsAt(rows) => {
                let r = self.op("heads", || self.token_logits_at(ws, t, rows))?;
                Box::new(move |f| Wanted::TokenLogitsAt(r.values(f)))
            }
            Want::Embeddings { pooling, normalize } => {
                let r = self.op("pooling", || {
                    self.embeddings_out(ws, t, s, *pooling, *normalize)
                })?;
                Box::new(move |f| Wanted::Embeddings(r.values(f)))
            }
        };
        self.seam.synchronize()?;
        Ok(out(&self.fetch()?))
    }

    /// The token-level head over the `rows` of `Hidden` only (their ids went
    /// up with the inputs, into `HeadRowIds`): the rows are gathered first,
    /// so every head GEMM (the MLM decoder's `[rows, vocab]` too) runs on
    /// them alone. `[rows.len(), width]`.
    fn token_logits_at(&self, ws: &Workspace, t: usize, rows: &[usize]) -> Result<Readback> {
        let n = rows.len();
        let gathered = ws[Buf::AttnOut]; // [tokens, H], free after the encoder; n <= t
        if n > 0 {
            self.seam.launch(
                k::GatherRowsParams {
                    x: ws[Buf::Hidden],
                    row_ids: ws[Buf::HeadRowIds],
                    out: gathered,
                    n: n as i32,
                    rows: t as i32,
                    width: self.w.config.hidden_size as i32,
                    _pad: 0,
                },
                k::gather_rows_geometry(n),
            )?;
        }
        self.token_logits(ws, gathered, n)?.ok_or_else(|| {
            Error::Input(format!(
                "{} has no per-token logits",
                self.w.config.architecture
            ))
        })
    }

    /// [`Want::Embeddings`] on the device: pooled (and normalized) rows
    /// written as f32 and read back, `[seqs, H]` (`[tokens, H]` for
    /// [`Pooling::None`]).
    fn embeddings_out(
        &self,
        ws: &Workspace,
        t: usize,
        s: usize,
        pooling: Pooling,
        normalize: bool,
    ) -> Result<Readback> {
        let h = self.w.config.hidden_size;
        let (x, rows, n, mode) = match pooling {
            Pooling::Cls => (ws[Buf::Hidden], t, s, k::PoolMode::First),
            Pooling::Mean => (ws[Buf::Hidden], t, s, k::PoolMode::Mean),
            Pooling::Pooler => {
                if !self.run_pooler(ws, t, s)? {
                    return Err(no_pooler());
                }
                (ws[Buf::Pooled], s, s, k::PoolMode::Each)
            }
            // The hidden states as they are: nothing to compute.
            Pooling::None if !normalize => return self.read(ws[Buf::Hidden], t * h),
            Pooling::None => (ws[Buf::Hidden], t, t, k::PoolMode::Each),
        };
        // Qkv is free after the encoder: 3·t·H halves hold n·H f32 (n <= t).
        let out = ws[Buf::Qkv];
        self.seam.launch(
            k::PoolNormalizeParams {
                x,
                cu: ws[Buf::CuSeqlens],
                out,
                n: n as i32,
                rows: rows as i32,
                width: h as i32,
                mode,
                normalize: normalize as i32,
                _pad: 0,
            },
            k::pool_normalize_geometry(n, h),
        )?;
        self.read_f32(out, n * h)
    }
}

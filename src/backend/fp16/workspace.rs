//! The activation workspace: every device buffer of the forward pass, named
//! by its role and sized in one place ([`Buf::bytes`]); allocated for the
//! largest batch seen (grown geometrically) and reused. The inputs (ids to
//! tiles) are views into one staging region, laid out per batch
//! ([`Layout`]), so they go up in one copy. The CUDA graphs captured on these
//! buffers live and die with them.

use super::seam::{DevPtr, GraphId, Seam};
use super::staging::{Bucket, Layout};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use std::collections::HashMap;

/// The buffers, by role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Buf {
    /// Views into the staging region (u32, see `staging::Layout`).
    /// Per token: ids, positions, token types.
    InputIds,
    PositionIds,
    TokenTypeIds,
    /// Per sequence (u32): packed-batch bounds, and each sequence's first row.
    CuSeqlens,
    FirstRows,
    /// [query tiles][2] (i32): attention_tc's work list.
    AttnTiles,
    /// [tokens, E]: embeddings before the E -> H projection.
    Embedded,
    /// [tokens, H]: a layer's input and output (the last hidden states at the end).
    Hidden,
    /// [tokens + 1, 3H] (the last row: the trash sequence's, see staging.rs)
    Qkv,
    /// [tokens + 1, H]: softmax(QK^T)V; [tokens, H]: LN(context Wo + bo + hidden).
    AttnContext,
    AttnOut,
    /// [tokens, I]
    FfnInter,
    /// [tokens, max(E, H)] and [tokens, head width]: token-level heads.
    HeadTransform,
    HeadLogits,
    /// [seqs, max(H, labels, 2)]: sequence-level heads.
    FirstTokens,
    Pooled,
    SeqScratch,
    SeqLogits,
    /// The inputs' region: `Layout::of(tokens, seqs, tokens)`.
    Staging,
    /// A view into `Staging` too (u32, up to one per token): the rows a
    /// token-level head runs on when asked for some rows only (gathered
    /// into `AttnOut`, free after the encoder).
    HeadRowIds,
}

/// The inputs, which live in `Staging`.
const STAGED: [Buf; 7] = [
    Buf::InputIds,
    Buf::PositionIds,
    Buf::TokenTypeIds,
    Buf::CuSeqlens,
    Buf::FirstRows,
    Buf::AttnTiles,
    Buf::HeadRowIds,
];

/// The allocations.
const ALL: [Buf; 13] = [
    Buf::Staging,
    Buf::Embedded,
    Buf::Hidden,
    Buf::Qkv,
    Buf::AttnContext,
    Buf::AttnOut,
    Buf::FfnInter,
    Buf::HeadTransform,
    Buf::HeadLogits,
    Buf::FirstTokens,
    Buf::Pooled,
    Buf::SeqScratch,
    Buf::SeqLogits,
];

/// The model widths the buffers are sized by.
#[derive(Clone, Copy)]
pub(super) struct Widths {
    hidden: usize,
    embed: usize,
    inter: usize,
    head_token: usize,
    seq: usize,
}

impl Widths {
    pub(super) fn of(c: &ModelConfig, head_token_width: usize) -> Widths {
        Widths {
            hidden: c.hidden_size,
            embed: c.embedding_size,
            inter: c.intermediate_size,
            head_token: head_token_width.max(1),
            seq: c.hidden_size.max(c.num_labels).max(2),
        }
    }

    /// An upper bound on what a forward reads back: the hidden states (or
    /// as many f32 rows: pooled embeddings come back in f32), the pooler
    /// output and the heads' logits.
    pub(super) fn readback_bytes(&self, tokens: usize, seqs: usize) -> usize {
        let hidden_f32 = tokens * self.hidden * 4;
        let rest: usize = [Buf::Pooled, Buf::HeadLogits, Buf::SeqLogits]
            .iter()
            .map(|b| b.bytes(self, tokens, seqs))
            .sum();
        hidden_f32 + rest
    }

    /// Bytes of every buffer for `tokens` tokens in `seqs` sequences.
    pub(super) fn total_bytes(&self, tokens: usize, seqs: usize) -> usize {
        ALL.iter().map(|b| b.bytes(self, tokens, seqs)).sum()
    }
}

impl Buf {
    fn bytes(self, w: &Widths, tokens: usize, seqs: usize) -> usize {
        const HALF: usize = 2;
        let wide = w.embed.max(w.hidden);
        match self {
            Buf::InputIds
            | Buf::PositionIds
            | Buf::TokenTypeIds
            | Buf::CuSeqlens
            | Buf::FirstRows
            | Buf::AttnTiles
            | Buf::HeadRowIds => 0, // views into Staging
            // At most one head row per token (`check_token_rows`).
            Buf::Staging => Layout::of(tokens, seqs, tokens).bytes(),
            Buf::Embedded => tokens * w.embed * HALF,
            Buf::Hidden | Buf::AttnOut => tokens * w.hidden * HALF,
            Buf::AttnContext => (tokens + 1) * w.hidden * HALF,
            Buf::Qkv => (tokens + 1) * 3 * w.hidden * HALF,
            Buf::FfnInter => tokens * w.inter * HALF,
            Buf::HeadTransform => tokens * wide * HALF,
            Buf::HeadLogits => tokens * w.head_token * HALF,
            Buf::FirstTokens | Buf::Pooled | Buf::SeqScratch | Buf::SeqLogits => {
                seqs * w.seq * HALF
            }
        }
    }
}

pub(super) struct Workspace {
    pub(super) tokens: usize,
    pub(super) seqs: usize,
    /// By `Buf as usize`; the staged inputs' entries are set per batch.
    ptrs: Vec<DevPtr>,
    /// The graphs captured on these buffers, by bucket.
    pub(super) graphs: HashMap<Bucket, GraphId>,
}

impl std::ops::Index<Buf> for Workspace {
    type Output = DevPtr;
    fn index(&self, b: Buf) -> &DevPtr {
        &self.ptrs[b as usize]
    }
}

impl Workspace {
    /// Points the input views at `layout`'s places in the staging region.
    pub(super) fn stage(&mut self, layout: &Layout) {
        let base = self[Buf::Staging];
        for (b, words) in STAGED.into_iter().zip([
            layout.ids,
            layout.positions,
            layout.types,
            layout.cu_seqlens,
            layout.first_rows,
            layout.tiles,
            layout.head_rows,
        ]) {
            self.ptrs[b as usize] = base + 4 * words as u64;
        }
    }

    /// Frees the buffers and the graphs on them.
    fn release<S: Seam>(self, seam: &S) -> Result<()> {
        for g in self.graphs.into_values() {
            seam.destroy_graph(g)?;
        }
        for (i, p) in self.ptrs.into_iter().enumerate() {
            if !STAGED.iter().any(|&b| b as usize == i) && p != 0 {
                seam.free(p)?;
            }
        }
        Ok(())
    }

    /// Makes `slot` hold a workspace for at least `tokens` tokens in `seqs`
    /// sequences. On failure nothing stays allocated, and the error says what
    /// was needed and, where the device can tell, how many tokens would fit.
    pub(super) fn ensure<S: Seam>(
        slot: &mut Option<Workspace>,
        seam: &S,
        widths: &Widths,
        weight_bytes: usize,
        tokens: usize,
        seqs: usize,
    ) -> Result<()> {
        if let Some(w) = slot {
            if w.tokens >= tokens && w.seqs >= seqs {
                return Ok(());
            }
        }
        if let Some(old) = slot.take() {
            old.release(seam)?;
        }
        // Grow geometrically so a stream of slightly larger batches does not
        // reallocate every call.
        let (tokens, seqs) = (
            tokens.next_power_of_two().max(64),
            seqs.next_power_of_two().max(8),
        );
        let mut ptrs = vec![0; ALL.len() + STAGED.len()];
        for b in ALL {
            match seam.alloc(b.bytes(widths, tokens, seqs).max(4)) {
                Ok(p) => ptrs[b as usize] = p,
                Err(err) => {
                    for p in ptrs.into_iter().filter(|&p| p != 0) {
                        seam.free(p)?;
                    }
                    // Tokens that fit in what is free now, at this model's bytes per token.
                    let per_token = widths.total_bytes(1024, 1).div_ceil(1024).max(1);
                    let fit = seam
                        .free_memory()
                        .map(|f| format!("; about {} tokens per batch would fit", f / per_token))
                        .unwrap_or_default();
                    return Err(Error::Device(format!(
                        "{err}; a batch of {tokens} tokens needs about {} MiB of activations beside \
                         {} MiB of weights{fit}",
                        widths.total_bytes(tokens, seqs) >> 20,
                        weight_bytes >> 20
                    )));
                }
            }
        }
        *slot = Some(Workspace {
            tokens,
            seqs,
            ptrs,
            graphs: HashMap::new(),
        });
        Ok(())
    }
}

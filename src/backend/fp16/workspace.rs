//! The activation workspace: every device buffer of the forward pass, named
//! by its role and sized in one place ([`Buf::bytes`]); allocated for the
//! largest batch seen (grown geometrically) and reused.

use super::seam::{DevPtr, Seam};
use crate::config::ModelConfig;
use crate::error::{Error, Result};

/// The buffers, by role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Buf {
    /// Per token (u32): ids, positions, token types.
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
    /// [tokens, 3H]
    Qkv,
    /// [tokens, H]: softmax(QK^T)V, then LN(context Wo + bo + hidden).
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
    /// [tokens, max(E, H)] zeros: bias and residual of a plain LayerNorm.
    Zeros,
    /// Per token (u32): the rows a token-level head runs on when asked for
    /// some rows only (gathered into `AttnOut`, free after the encoder).
    HeadRowIds,
}

const ALL: [Buf; 20] = [
    Buf::InputIds,
    Buf::PositionIds,
    Buf::TokenTypeIds,
    Buf::CuSeqlens,
    Buf::FirstRows,
    Buf::AttnTiles,
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
    Buf::Zeros,
    Buf::HeadRowIds,
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

    /// Bytes of every buffer for `tokens` tokens in `seqs` sequences.
    pub(super) fn total_bytes(&self, tokens: usize, seqs: usize) -> usize {
        ALL.iter().map(|b| b.bytes(self, tokens, seqs)).sum()
    }
}

impl Buf {
    fn bytes(self, w: &Widths, tokens: usize, seqs: usize) -> usize {
        const HALF: usize = 2;
        const U32: usize = 4;
        let wide = w.embed.max(w.hidden);
        match self {
            Buf::InputIds | Buf::PositionIds | Buf::TokenTypeIds | Buf::HeadRowIds => tokens * U32,
            Buf::CuSeqlens => (seqs + 1) * U32,
            Buf::FirstRows => seqs * U32,
            Buf::AttnTiles => {
                crate::backend::kernels::attention_tc_max_tiles(tokens, seqs) * 2 * U32
            }
            Buf::Embedded => tokens * w.embed * HALF,
            Buf::Hidden | Buf::AttnContext | Buf::AttnOut => tokens * w.hidden * HALF,
            Buf::Qkv => tokens * 3 * w.hidden * HALF,
            Buf::FfnInter => tokens * w.inter * HALF,
            Buf::HeadTransform | Buf::Zeros => tokens * wide * HALF,
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
    ptrs: Vec<DevPtr>,
}

impl std::ops::Index<Buf> for Workspace {
    type Output = DevPtr;
    fn index(&self, b: Buf) -> &DevPtr {
        &self.ptrs[b as usize]
    }
}

impl Workspace {
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
            for p in old.ptrs {
                seam.free(p)?;
            }
        }
        // Grow geometrically so a stream of slightly larger batches does not
        // reallocate every call.
        let (tokens, seqs) = (
            tokens.next_power_of_two().max(64),
            seqs.next_power_of_two().max(8),
        );
        let mut ptrs = Vec::with_capacity(ALL.len());
        for b in ALL {
            match seam.alloc(b.bytes(widths, tokens, seqs).max(4)) {
                Ok(p) => ptrs.push(p),
                Err(err) => {
                    for p in ptrs {
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
        *slot = Some(Workspace { tokens, seqs, ptrs });
        Ok(())
    }
}

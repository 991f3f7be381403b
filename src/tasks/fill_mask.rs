//! Fill-mask, as HF's fill-mask pipeline: softmax over the vocabulary at each
//! mask position, top-k, and the sequence with that one mask filled.

use super::{softmax, top_k, RunForward};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::output::Want;
use crate::tokenize::Truncation;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MaskPrediction {
    pub score: f32,
    pub token: u32,
    pub token_str: String,
    pub sequence: String,
}

/// Predictions for every mask in `text`, one list per mask, in order.
pub fn fill_mask(engine: &Engine, text: &str, k: usize) -> Result<Vec<Vec<MaskPrediction>>> {
    fill_mask_via(engine, text, k, &|b, w| engine.forward_want(b, w))
}

/// [`fill_mask`] with its forward run by `run`.
pub fn fill_mask_via(
    engine: &Engine,
    text: &str,
    k: usize,
    run: RunForward,
) -> Result<Vec<Vec<MaskPrediction>>> {
    // The head first: no tokenizing or forward for a model that cannot answer.
    if !matches!(
        engine.config.head,
        crate::config::Head::MaskedLm | crate::config::Head::AlbertPreTraining
    ) {
        return Err(Error::Input(format!(
            "fill-mask needs a masked-LM model (*ForMaskedLM); {} has no MLM head",
            engine.config.architecture
        )));
    }
    let tok = &engine.tokenizer;
    let (mask, mask_id) = match (&tok.mask_token, tok.mask_id()) {
        (Some(m), Some(id)) => (m.clone(), id),
        _ => return Err(Error::Input("this tokenizer has no mask token".into())),
    };
    if text.trim().is_empty() {
        return Err(Error::Input(format!(
            "empty text; put {mask} where a word should be predicted"
        )));
    }
    let (encs, batch) = engine.encode_batch(&[(text, None)], None, Truncation::Error)?;
    let ids = &encs[0].ids;
    let positions: Vec<usize> = (0..ids.len()).filter(|&i| ids[i] == mask_id).collect();
    if positions.is_empty() {
        return Err(Error::Input(format!(
            "no mask token in {text:?}; put {mask} where a word should be predicted"
        )));
    }
    // Only the mask rows' logits: [masks, vocab].
    let logits = run(&batch, &Want::TokenLogitsAt(positions.clone()))?.into_token_logits()?;
    let v = engine.config.vocab_size;
    if logits.len() != positions.len() * v {
        return Err(Error::Internal(format!(
            "the MLM head of {} gave {} logits for {} masks of vocabulary {v}",
            engine.config.architecture,
            logits.len(),
            positions.len()
        )));
    }
    // With several masks HF keeps special tokens in `sequence` so the other
    // masks stay visible.
    let single = positions.len() == 1;
    let pad = engine.config.pad_token_id;
    let mut all = Vec::new();
    for (&p, row) in positions.iter().zip(logits.chunks_exact(v)) {
        let probs = softmax(row);
        let mut row = Vec::new();
        for id in top_k(&probs, k.min(v)) {
            let mut filled = ids.clone();
            filled[p] = id as u32;
            filled.retain(|&t| t != pad);
            row.push(MaskPrediction {
                score: probs[id],
                token: id as u32,
                token_str: tok.decode(&[id as u32], false)?,
                sequence: tok.decode(&filled, single)?,
            });
        }
        all.push(row);
    }
    Ok(all)
}

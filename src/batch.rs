//! The packed batch: the one internal input format of every backend.
//!
//! Sequences are concatenated without padding; sequence s owns token rows
//! `cu_seqlens[s]..cu_seqlens[s+1]`. Attention never crosses these bounds, so
//! a batch gives exactly the per-sequence results.

use crate::config::ModelConfig;
use crate::error::{Error, Result};

/// Built only by [`Batch::pack`], which checks every id against the model's
/// tables: the fields are private so no caller can hand a backend an id that
/// would `__trap()` the GPU context or index past a CPU table.
///
/// ```compile_fail,E0451
/// let b = bertrt::batch::Batch {
///     input_ids: vec![999_999],
///     token_type_ids: vec![0],
///     position_ids: vec![0],
///     cu_seqlens: vec![0, 1],
/// };
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    input_ids: Vec<u32>,
    token_type_ids: Vec<u32>,
    position_ids: Vec<u32>,
    cu_seqlens: Vec<usize>,
}

/// One sequence's ids (special tokens already added).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SequenceIds {
    pub input_ids: Vec<u32>,
    /// Empty means all zeros.
    pub token_type_ids: Vec<u32>,
}

impl Batch {
    /// Packs sequences, computing position ids as the model family does and
    /// checking every id against the config's tables.
    pub fn pack(seqs: &[SequenceIds], cfg: &ModelConfig) -> Result<Batch> {
        let mut b = Batch {
            input_ids: Vec::new(),
            token_type_ids: Vec::new(),
            position_ids: Vec::new(),
            cu_seqlens: vec![0],
        };
        let max_len = cfg.max_tokens_per_sequence();
        for (s, seq) in seqs.iter().enumerate() {
            let n = seq.input_ids.len();
            if n == 0 {
                return Err(Error::Input(format!("sequence {s} has no tokens")));
            }
            if n > max_len {
                return Err(Error::Input(format!(
                    "sequence {s} has {n} tokens; the model allows at most {max_len} (max_position_embeddings {})",
                    cfg.max_position_embeddings
                )));
            }
            if !seq.token_type_ids.is_empty() && seq.token_type_ids.len() != n {
                return Err(Error::Input(format!(
                    "sequence {s}: {} token_type_ids for {n} input_ids",
                    seq.token_type_ids.len()
                )));
            }
            if let Some(&bad) = seq
                .input_ids
                .iter()
                .find(|&&i| i as usize >= cfg.vocab_size)
            {
                return Err(Error::Input(format!(
                    "sequence {s}: token id {bad} is outside the vocabulary (size {})",
                    cfg.vocab_size
                )));
            }
            let types = if seq.token_type_ids.is_empty() {
                vec![0; n]
            } else {
                seq.token_type_ids.clone()
            };
            if let Some(&bad) = types
                .iter()
                .find(|&&t| t as usize >= cfg.type_vocab_size.max(1))
            {
                return Err(Error::Input(format!(
                    "sequence {s}: token_type_id {bad} but type_vocab_size is {}",
                    cfg.type_vocab_size
                )));
            }
            b.position_ids.extend(position_ids(&seq.input_ids, cfg));
            b.input_ids.extend_from_slice(&seq.input_ids);
            b.token_type_ids.extend(types);
            b.cu_seqlens.push(b.input_ids.len());
        }
        Ok(b)
    }

    /// Token ids, all sequences concatenated, `[tokens]`.
    pub fn input_ids(&self) -> &[u32] {
        &self.input_ids
    }
    /// Token type ids, `[tokens]` (zeros where none were given).
    pub fn token_type_ids(&self) -> &[u32] {
        &self.token_type_ids
    }
    /// Position ids as the model family counts them, `[tokens]`.
    pub fn position_ids(&self) -> &[u32] {
        &self.position_ids
    }
    /// Sequence bounds, `[seqs + 1]`, from 0 to the token count.
    pub fn cu_seqlens(&self) -> &[usize] {
        &self.cu_seqlens
    }
    pub fn num_seqs(&self) -> usize {
        self.cu_seqlens.len() - 1
    }
    pub fn num_tokens(&self) -> usize {
        self.input_ids.len()
    }
    pub fn seq_range(&self, s: usize) -> std::ops::Range<usize> {
        self.cu_seqlens[s]..self.cu_seqlens[s + 1]
    }
    pub fn max_seq_len(&self) -> usize {
        (0..self.num_seqs())
            .map(|s| self.seq_range(s).len())
            .max()
            .unwrap_or(0)
    }
}

/// BERT counts from 0. RoBERTa counts non-pad tokens from pad_token_id + 1 and
/// gives pad tokens the pad position, as HF's
/// `create_position_ids_from_input_ids` does (it looks at ids, not the mask).
fn position_ids(ids: &[u32], cfg: &ModelConfig) -> Vec<u32> {
    if !cfg.family.offset_positions() {
        return (0..ids.len() as u32).collect();
    }
    let pad = cfg.pad_token_id;
    let mut count = 0;
    ids.iter()
        .map(|&id| {
            if id == pad {
                pad
            } else {
                count += 1;
                pad + count
            }
        })
        .collect()
}

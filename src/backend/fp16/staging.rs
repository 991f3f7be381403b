//! A batch's inputs as one host buffer for one upload: ids, positions, token
//! types, cu_seqlens, first rows, attention_tc's tile list and the rows a
//! token-level head is asked for, packed as u32 words ([`Layout`]); the
//! workspace's input buffers are views into the one device region it lands in.
//!
//! Also the CUDA-graph bucket policy: a small batch is padded up to its
//! bucket's sizes, so one captured launch list serves every batch in the
//! bucket. The real sizes never enter the graph: every size in a launch is
//! the bucket's, and what differs between batches is data in this buffer.

use crate::backend::kernels as k;
use crate::batch::Batch;

/// Graphs are captured for batches of at most this many tokens (rounded up)
/// and sequences (with the padding sequences): beyond that a forward is long
/// enough that launch overhead no longer matters, and padding costs more.
pub const GRAPH_MAX_TOKENS: usize = 4096;
pub const GRAPH_MAX_SEQS: usize = 256;
/// Padding tokens form sequences of at most this many tokens (one attention
/// key tile's worth), so their attention costs no more than real tokens'.
pub const PAD_SEQ_LEN: usize = 32;
/// The smallest token bucket: below it one graph serves all.
const MIN_TOKEN_BUCKET: usize = 16;

/// A graph's shape: batches padded to `tokens` tokens in `seqs` sequences.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Bucket {
    pub tokens: usize,
    pub seqs: usize,
}

impl Bucket {
    /// Tokens rounded up to a power of two (at least 16); sequences (the real
    /// ones, plus the padding sequences the spare tokens need) rounded up to a
    /// power of two. None when the batch is too large for graphs.
    pub fn of(tokens: usize, seqs: usize) -> Option<Bucket> {
        let t = tokens.next_power_of_two().max(MIN_TOKEN_BUCKET);
        let pad_seqs = (t - tokens).div_ceil(PAD_SEQ_LEN);
        let s = (seqs + pad_seqs).next_power_of_two();
        (t <= GRAPH_MAX_TOKENS && s <= GRAPH_MAX_SEQS).then_some(Bucket { tokens: t, seqs: s })
    }
}

/// Word offsets of each input in the staging buffer, for `tokens` tokens in
/// `seqs` sequences.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Layout {
    pub ids: usize,
    pub positions: usize,
    pub types: usize,
    /// `seqs + 2` entries: the bounds, and the end of the one-row "trash"
    /// sequence that a bucket's spare attention tiles point at.
    pub cu_seqlens: usize,
    pub first_rows: usize,
    /// `[attention_tc_max_tiles(tokens, seqs)][2]`.
    pub tiles: usize,
    /// The head's row ids (fill-mask's mask positions), last: the encoder's
    /// inputs keep their places whatever their count, so a graph captured
    /// for the bucket still reads them where they are.
    pub head_rows: usize,
    pub words: usize,
}

impl Layout {
    /// With room for `head_rows` row ids.
    pub fn of(tokens: usize, seqs: usize, head_rows: usize) -> Layout {
        let ids = 0;
        let positions = ids + tokens;
        let types = positions + tokens;
        let cu_seqlens = types + tokens;
        let first_rows = cu_seqlens + seqs + 2;
        let tiles = first_rows + seqs;
        let rows_at = tiles + 2 * k::attention_tc_max_tiles(tokens, seqs);
        Layout {
            ids,
            positions,
            types,
            cu_seqlens,
            first_rows,
            tiles,
            head_rows: rows_at,
            words: rows_at + head_rows,
        }
    }

    pub fn bytes(&self) -> usize {
        self.words * 4
    }
}

/// One forward's inputs, packed.
pub(super) struct Staged {
    pub words: Vec<u32>,
    pub layout: Layout,
    /// The sizes every launch is built with (the bucket's when padded).
    pub tokens: usize,
    pub seqs: usize,
    /// For attention.cu's grid: the longest sequence (the bucket's tokens
    /// when padded, as any batch in the bucket may have one that long).
    pub max_len: usize,
    /// attention_tc's tiles (the bucket's upper bound when padded).
    pub tiles: usize,
}

impl Staged {
    /// The batch as it is.
    pub fn exact(batch: &Batch) -> Staged {
        let cu = batch.cu_seqlens();
        let (t, s) = (batch.num_tokens(), batch.num_seqs());
        let tiles = k::attention_tc_tiles(cu);
        let mut st = Staged::new(batch, t, s, &tiles);
        st.max_len = batch.max_seq_len();
        st.fill_cu(cu.iter().copied());
        st
    }

    /// The batch padded to `b`: tokens past the real ones (id, position and
    /// type 0) in padding sequences of at most [`PAD_SEQ_LEN`], empty
    /// sequences up to `b.seqs`, and the tile list filled up to its bound
    /// with tiles of a one-row trash sequence past the end. Real rows come
    /// out as in [`Staged::exact`]; the rest is computed and discarded.
    pub fn padded(batch: &Batch, b: Bucket) -> Staged {
        let (t, s) = (batch.num_tokens(), batch.num_seqs());
        debug_assert!(Bucket::of(t, s).is_some_and(|f| f.tokens <= b.tokens && f.seqs <= b.seqs));
        let mut cu = batch.cu_seqlens().to_vec();
        let mut end = t;
        while end < b.tokens {
            end = (end + PAD_SEQ_LEN).min(b.tokens);
            cu.push(end);
        }
        cu.resize(b.seqs + 1, b.tokens);
        let mut tiles = k::attention_tc_tiles(&cu);
        let bound = k::attention_tc_max_tiles(b.tokens, b.seqs);
        while tiles.len() < 2 * bound {
            tiles.extend([b.seqs as i32, 0]);
        }
        let mut st = Staged::new(batch, b.tokens, b.seqs, &tiles);
        st.max_len = b.tokens;
        st.fill_cu(cu.into_iter());
        st
    }

    /// Ids, positions and types (zeros past the batch) and the tiles.
    fn new(batch: &Batch, tokens: usize, seqs: usize, tiles: &[i32]) -> Staged {
        let layout = Layout::of(tokens, seqs, 0);
        let mut words = vec![0u32; layout.words];
        let t = batch.num_tokens();
        words[layout.ids..][..t].copy_from_slice(batch.input_ids());
        words[layout.positions..][..t].copy_from_slice(batch.position_ids());
        words[layout.types..][..t].copy_from_slice(batch.token_type_ids());
        for (w, &v) in words[layout.tiles..].iter_mut().zip(tiles) {
            *w = v as u32;
        }
        Staged {
            words,
            layout,
            tokens,
            seqs,
            max_len: 0,
            tiles: tiles.len() / 2,
        }
    }

    /// With the rows a token-level head runs on (fill-mask's masks), so
    /// they go up in the same copy as the encoder's inputs.
    pub fn with_head_rows(mut self, rows: &[usize]) -> Staged {
        self.layout = Layout::of(self.tokens, self.seqs, rows.len());
        self.words.extend(rows.iter().map(|&r| r as u32));
        debug_assert_eq!(self.words.len(), self.layout.words);
        self
    }

    /// cu_seqlens (`seqs + 1` bounds, then the trash sequence's end) and each
    /// sequence's first row (clamped into the batch for empty ones).
    fn fill_cu(&mut self, cu: impl Iterator<Item = usize>) {
        let l = self.layout;
        let cu: Vec<u32> = cu.map(|c| c as u32).collect();
        debug_assert_eq!(cu.len(), self.seqs + 1);
        self.words[l.cu_seqlens..][..cu.len()].copy_from_slice(&cu);
        self.words[l.cu_seqlens + self.seqs + 1] = self.tokens as u32 + 1;
        let last_row = self.tokens as u32 - 1;
        for (i, &c) in cu[..self.seqs].iter().enumerate() {
            self.words[l.first_rows + i] = c.min(last_row);
        }
    }

    pub fn bytes(&self) -> &[u8] {
        bytemuck::cast_slice(&self.words)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_round_up_and_leave_room_for_the_padding_sequences() {
        // b1·s128: no padding, one sequence.
        assert_eq!(
            Bucket::of(128, 1),
            Some(Bucket {
                tokens: 128,
                seqs: 1
            })
        );
        // 100 tokens in 8 sequences: 28 spare tokens need one more sequence.
        assert_eq!(
            Bucket::of(100, 8),
            Some(Bucket {
                tokens: 128,
                seqs: 16
            })
        );
        assert_eq!(Bucket::of(3, 1).map(|b| b.tokens), Some(MIN_TOKEN_BUCKET));
        assert_eq!(Bucket::of(GRAPH_MAX_TOKENS + 1, 1), None);
        assert_eq!(Bucket::of(64, GRAPH_MAX_SEQS + 1), None);
    }

    #[test]
    fn padded_inputs_fill_the_bucket_with_short_sequences_and_trash_tiles() {
        let cfg = crate::config::ModelConfig::from_json_str(
            r#"{"model_type":"bert","hidden_size":64,"num_attention_heads":2,"num_hidden_layers":1,
            "intermediate_size":64,"max_position_embeddings":128,"vocab_size":50,"type_vocab_size":2}"#,
            std::path::Path::new("inline"),
        )
        .unwrap();
        let seq = |n| crate::batch::SequenceIds {
            input_ids: vec![7; n],
            token_type_ids: vec![1; n],
        };
        let batch = Batch::pack(&[seq(30), seq(3)], &cfg).unwrap();
        let b = Bucket::of(33, 2).unwrap();
        assert_eq!(
            b,
            Bucket {
                tokens: 64,
                seqs: 4
            }
        );
        let st = Staged::padded(&batch, b);
        let l = st.layout;
        let w = &st.words;
        // 31 spare tokens: one padding sequence, then one empty one, then the trash bound.
        assert_eq!(&w[l.cu_seqlens..l.cu_seqlens + 6], &[0, 30, 33, 64, 64, 65]);
        assert_eq!(&w[l.first_rows..l.first_rows + 4], &[0, 30, 33, 63]);
        assert_eq!(
            &w[l.ids..l.ids + 34],
            &[[7; 33].as_slice(), &[0]].concat()[..]
        );
        assert_eq!(w[l.types + 32], 1);
        assert_eq!(w[l.types + 33], 0);
        assert_eq!(st.tiles, k::attention_tc_max_tiles(64, 4));
        let tiles = &w[l.tiles..l.tiles + 2 * st.tiles];
        // Real and padding tiles (2 + 1 + 2), then the trash sequence's.
        assert_eq!(&tiles[..10], &[0, 0, 0, 16, 1, 0, 2, 0, 2, 16]);
        assert!(tiles[10..].chunks(2).all(|t| t == [4, 0]), "{tiles:?}");
    }
}

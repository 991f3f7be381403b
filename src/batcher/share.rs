//! Splitting one packed forward among the requests it served: the merged
//! want, and each request's share of the answer.

use super::Taken;
use crate::output::{ForwardOutput, HeadOutput, Want, Wanted};
use crate::tasks::embed::Pooling;

/// The whole forward's want: the first request's, with every request's
/// token rows in one list, each offset by the request's first token.
pub(super) fn merged_want(requests: &[Taken]) -> Want {
    let first = requests[0].2.clone();
    if !matches!(first, Want::TokenLogitsAt(_)) {
        return first;
    }
    let mut rows = Vec::new();
    let mut first_tok = 0;
    for (_, own_batch, want, _, _) in requests {
        if let Want::TokenLogitsAt(r) = want {
            rows.extend(r.iter().map(|&r| r + first_tok));
        }
        first_tok += own_batch.num_tokens();
    }
    Want::TokenLogitsAt(rows)
}

/// Token rows a want asks for (0 unless [`Want::TokenLogitsAt`]).
pub(super) fn token_rows(want: &Want) -> usize {
    match want {
        Want::TokenLogitsAt(r) => r.len(),
        _ => 0,
    }
}

/// A request's sequences, tokens and asked-for token rows within a forward
/// (or the whole forward's).
pub(super) struct Share {
    pub(super) seqs: std::ops::Range<usize>,
    pub(super) toks: std::ops::Range<usize>,
    pub(super) rows: std::ops::Range<usize>,
}

/// The part of `out` (the answer to `want`) that belongs to the request at
/// `at`, given the whole forward's `total`.
pub(super) fn slice_wanted(out: &Wanted, want: &Want, total: &Share, at: &Share) -> Wanted {
    let part = |v: &[f32], of: &std::ops::Range<usize>, n: usize| {
        let w = v.len().checked_div(n).unwrap_or(0);
        v[of.start * w..of.end * w].to_vec()
    };
    match out {
        Wanted::Everything(o) => Wanted::Everything(slice_output(
            o,
            (total.seqs.len(), total.toks.len()),
            at.seqs.clone(),
            at.toks.clone(),
        )),
        Wanted::Head(h) => Wanted::Head(slice_head(
            h,
            (total.seqs.len(), total.toks.len()),
            &at.seqs,
            &at.toks,
        )),
        Wanted::TokenLogitsAt(v) => Wanted::TokenLogitsAt(part(v, &at.rows, total.rows.len())),
        Wanted::Embeddings(v) => Wanted::Embeddings(match want {
            Want::Embeddings {
                pooling: Pooling::None,
                ..
            } => part(v, &at.toks, total.toks.len()),
            _ => part(v, &at.seqs, total.seqs.len()),
        }),
    }
}
/// The rows of `out` that belong to sequences `seqs` (tokens `toks`), given
/// the whole batch's `(sequences, tokens)`.
fn slice_output(
    out: &ForwardOutput,
    (n_seqs, n_toks): (usize, usize),
    seqs: std::ops::Range<usize>,
    toks: std::ops::Range<usize>,
) -> ForwardOutput {
    let per_tok = |v: &[f32]| {
        let w = v.len() / n_toks;
        v[toks.start * w..toks.end * w].to_vec()
    };
    let per_seq = |v: &[f32]| {
        let w = v.len() / n_seqs;
        v[seqs.start * w..seqs.end * w].to_vec()
    };
    ForwardOutput {
        hidden: per_tok(&out.hidden),
        pooled: out.pooled.as_deref().map(per_seq),
        head: slice_head(&out.head, (n_seqs, n_toks), &seqs, &toks),
    }
}

/// [`slice_output`] for a head output alone.
fn slice_head(
    head: &HeadOutput,
    (n_seqs, n_toks): (usize, usize),
    seqs: &std::ops::Range<usize>,
    toks: &std::ops::Range<usize>,
) -> HeadOutput {
    let per_tok = |v: &[f32]| {
        let w = v.len() / n_toks;
        v[toks.start * w..toks.end * w].to_vec()
    };
    let per_seq = |v: &[f32]| {
        let w = v.len() / n_seqs;
        v[seqs.start * w..seqs.end * w].to_vec()
    };
    match head {
        HeadOutput::None => HeadOutput::None,
        HeadOutput::TokenLogits(l) => HeadOutput::TokenLogits(per_tok(l)),
        HeadOutput::SequenceLogits(l) => HeadOutput::SequenceLogits(per_seq(l)),
        HeadOutput::StartEnd { start, end } => HeadOutput::StartEnd {
            start: per_tok(start),
            end: per_tok(end),
        },
        HeadOutput::PreTraining { mlm, sop } => HeadOutput::PreTraining {
            mlm: per_tok(mlm),
            sop: per_seq(sop),
        },
    }
}

//! Per-window span decoding as HF's pipeline does it: masked softmax,
//! the best (start, end) entries of the score matrix, and their characters.

use super::argpartition::np_argpartition;
use tokenizers::Encoding;

/// Masked softmax of start and end logits of one window; returns the
/// probabilities with position 0 zeroed and the null score start[0]*end[0].
pub(super) fn normalize(start: &[f32], end: &[f32], allowed: &[bool]) -> (Vec<f32>, Vec<f32>, f32) {
    let sm = |x: &[f32]| -> Vec<f32> {
        let masked: Vec<f32> = x
            .iter()
            .zip(allowed)
            .map(|(&v, &ok)| if ok { v } else { -10000.0 })
            .collect();
        let m = masked.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let ex: Vec<f32> = masked.iter().map(|&v| (v - m).exp()).collect();
        let sum: f64 = ex.iter().map(|&v| v as f64).sum();
        ex.iter().map(|&v| (v as f64 / sum) as f32).collect()
    };
    let mut s = sm(start);
    let mut e = sm(end);
    let null = s[0] * e[0];
    s[0] = 0.0;
    e[0] = 0.0;
    (s, e, null)
}

/// HF's `decode_spans`: the `topk` best (start, end) entries of the score
/// matrix (zeros outside `start <= end < start + max_answer_len`), best first,
/// keeping those whose start and end may be in an answer (or are index 0).
///
/// Which entries numpy's `argpartition` returns matters only among equal
/// scores, in practice the zero entries picked when a window has fewer
/// positive spans than `topk`. Those are chosen here as numpy's AVX-512 path
/// (x86-simd-sort's `argselect`) chooses them, see [`np_argpartition`].
pub(super) fn decode_spans(
    start: &[f32],
    end: &[f32],
    topk: usize,
    max_answer_len: usize,
    allowed: &[bool],
) -> Vec<(usize, usize, f32)> {
    let n = start.len();
    let score = |i: usize, j: usize| -> f32 {
        if j >= i && j - i < max_answer_len {
            start[i] * end[j]
        } else {
            0.0
        }
    };
    let mut picked: Vec<(usize, usize)> = Vec::new();
    if topk == 1 {
        // np.argmax: first maximum in flat order; all zero gives (0, 0).
        let mut best = (0, 0);
        let mut best_score = 0.0f32;
        for i in 0..n {
            for j in i..n.min(i + max_answer_len) {
                let v = score(i, j);
                if v > best_score {
                    best_score = v;
                    best = (i, j);
                }
            }
        }
        picked.push(best);
    } else {
        // Keys as numpy sees them: -scores_flat.
        let mut keys = vec![-0.0f32; n * n];
        for i in 0..n {
            for j in i..n.min(i + max_answer_len) {
                keys[i * n + j] = -score(i, j);
            }
        }
        let mut idx: Vec<usize> = if keys.len() < topk {
            (0..keys.len()).collect()
        } else {
            let mut arg = np_argpartition(&keys, topk);
            arg.truncate(topk);
            arg
        };
        // np.argsort(-scores[idx]): equal keys (-0.0 == 0.0 too) keep
        // their order, as observed with numpy 2.3 on these small arrays.
        idx.sort_by(|&a, &b| {
            keys[a]
                .partial_cmp(&keys[b])
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        picked.extend(idx.iter().map(|&f| (f / n, f % n)));
    }
    let any_allowed = allowed.iter().any(|&a| a);
    let ok = |x: usize| allowed[x] || (x == 0 && any_allowed);
    picked
        .into_iter()
        .filter(|&(i, j)| ok(i) && ok(j))
        .map(|(i, j)| (i, j, score(i, j)))
        .collect()
}

/// HF's `get_indices`: character span of tokens s..=e of a window.
pub(super) fn char_span(
    enc: &Encoding,
    s: usize,
    e: usize,
    ctx_seq: usize,
    align_to_words: bool,
) -> (usize, usize) {
    let offsets = enc.get_offsets();
    if align_to_words {
        let word = |t: usize| enc.token_to_word(t).map(|(_, w)| w);
        let aligned = word(s)
            .and_then(|ws| enc.word_to_chars(ws, ctx_seq))
            .zip(word(e).and_then(|we| enc.word_to_chars(we, ctx_seq)));
        if let Some((a, b)) = aligned {
            return (a.0, b.1);
        }
    }
    (offsets[s].0, offsets[e].1)
}

/// Python's `text[start:end]` on characters.
pub(super) fn char_slice(text: &str, start: usize, end: usize) -> String {
    if start >= end {
        return String::new();
    }
    text.chars().skip(start).take(end - start).collect()
}

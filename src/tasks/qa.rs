//! Extractive question answering, equal to HF transformers 4.57.1's
//! `QuestionAnsweringPipeline` (fast-tokenizer path).
//!
//! What the pipeline does, and what this module reproduces:
//! * preprocess: `tokenizer(question, context, truncation="only_second",
//!   max_length=max_seq_len, stride=doc_stride, return_overflowing_tokens=True)`
//!   (context first and `only_first` for left-padding tokenizers); every window
//!   (the main encoding, then its overflowing ones) is one model input, unpadded.
//!   `max_question_len` is only used by the slow-tokenizer path: ignored here.
//! * p_mask: 1 for every token whose sequence id is not the context's (question
//!   and special tokens), then 0 again at every position holding the CLS id.
//!   (For left-padding tokenizers HF puts 0 everywhere.)
//! * per window: masked logits set to -10000, softmax of start and of end;
//!   `min_null_score = min(start[0] * end[0])` over windows when
//!   `handle_impossible_answer`; then start[0] = end[0] = 0; the score matrix
//!   start ⊗ end keeps `end >= start` and `end - start < max_answer_len`
//!   (zeros elsewhere); the best `top_k * 2 + 10` entries (`top_k` without
//!   `align_to_words`) of the whole matrix, best first, are kept when both
//!   their start and end are context tokens or index 0 (numpy's `isin` with
//!   a 2-D `nonzero()` lets index 0 through).
//! * each span becomes characters: with `align_to_words`, from the first
//!   character of the start token's word to the last of the end token's word
//!   (`word_to_chars` within the window), falling back to the tokens' own
//!   offsets when either token has no word; answer = `context[start..end]` in
//!   characters (empty when start >= end). An answer whose text equals an
//!   earlier one (case-insensitively) adds its score to that one instead.
//! * `{"score": min_null_score, "start": 0, "end": 0, "answer": ""}` is
//!   appended when `handle_impossible_answer`; all answers are stably sorted
//!   by score, best first, and cut to `top_k`.
//!
//! One thing is machine dependent in HF itself: when a window has fewer
//! positive candidates than asked for (tiny contexts with a large `top_k`),
//! numpy fills the rest with zero-score entries in the order its SIMD
//! `argpartition` leaves them. Those can only add a score-0 empty answer
//! (start/end from the first such span). Its choice is emulated here as
//! numpy 2.x does it on AVX-512 CPUs (see [`np_argpartition`]); other CPUs
//! (AVX2-only, ARM) may give that answer other start/end values in HF.

use crate::batch::{Batch, SequenceIds};
use crate::config::Head;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::output::HeadOutput;
use serde::Serialize;
use tokenizers::{Encoding, TruncationDirection, TruncationParams, TruncationStrategy};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Answer {
    pub score: f32,
    /// Character offsets into the context.
    pub start: usize,
    pub end: usize,
    pub answer: String,
}

#[derive(Debug, Clone)]
pub struct QaOptions {
    pub top_k: usize,
    pub doc_stride: usize,
    pub max_answer_len: usize,
    pub max_seq_len: usize,
    /// Accepted for parity with HF; like HF with a fast tokenizer, unused.
    pub max_question_len: usize,
    pub handle_impossible_answer: bool,
    pub align_to_words: bool,
}

impl Default for QaOptions {
    fn default() -> Self {
        QaOptions {
            top_k: 1,
            doc_stride: 128,
            max_answer_len: 15,
            max_seq_len: 384,
            max_question_len: 64,
            handle_impossible_answer: false,
            align_to_words: true,
        }
    }
}

impl QaOptions {
    /// The defaults HF computes when `max_seq_len`/`doc_stride` are not given:
    /// `max_seq_len = min(tokenizer.model_max_length, 384)` and
    /// `doc_stride = min(max_seq_len / 2, 128)`.
    pub fn hf_defaults(engine: &Engine) -> QaOptions {
        let model_max = tokenizer_config(engine)
            .and_then(|v| v.get("model_max_length").and_then(|m| m.as_f64()))
            .map(|m| if m >= 1e15 { usize::MAX } else { m as usize })
            .unwrap_or(usize::MAX);
        let max_seq_len = model_max.min(384);
        QaOptions {
            max_seq_len,
            doc_stride: (max_seq_len / 2).min(128),
            ..QaOptions::default()
        }
    }
}

/// Answers to one question about one context, best first.
pub fn qa(engine: &Engine, question: &str, context: &str, opts: &QaOptions) -> Result<Vec<Answer>> {
    Ok(qa_many(engine, &[(question, context)], opts)?.remove(0))
}

/// Window of one item: its encoding, p_mask-derived "may be in the answer".
struct Window {
    item: usize,
    enc: Encoding,
    allowed: Vec<bool>,
}

/// Answers for many (question, context) pairs; all windows of all items go
/// through one packed forward pass.
pub fn qa_many(
    engine: &Engine,
    items: &[(&str, &str)],
    opts: &QaOptions,
) -> Result<Vec<Vec<Answer>>> {
    let c = &engine.config;
    if c.head != Head::QuestionAnswering {
        return Err(Error::Input(format!(
            "qa needs a *ForQuestionAnswering model; got {}",
            c.architecture
        )));
    }
    if opts.top_k < 1 {
        return Err(Error::Input(format!(
            "top_k parameter should be >= 1 (got {})",
            opts.top_k
        )));
    }
    if opts.max_answer_len < 1 {
        return Err(Error::Input(format!(
            "max_answer_len parameter should be >= 1 (got {})",
            opts.max_answer_len
        )));
    }
    let limit = c.max_tokens_per_sequence();
    if opts.max_seq_len > limit {
        return Err(Error::Input(format!(
            "max_seq_len {} is more than the model allows ({limit} tokens per sequence)",
            opts.max_seq_len
        )));
    }
    if opts.doc_stride > opts.max_seq_len {
        return Err(Error::Input(format!(
            "`doc_stride` ({}) is larger than `max_seq_len` ({})",
            opts.doc_stride, opts.max_seq_len
        )));
    }
    if items.is_empty() {
        return Ok(Vec::new());
    }

    let inner = engine.tokenizer.inner();
    let question_first = tokenizer_config(engine)
        .and_then(|v| {
            v.get("padding_side")
                .and_then(|s| s.as_str().map(|s| s.to_string()))
        })
        .is_none_or(|s| s == "right");
    let cls_id = crate::tokenize::special_token(&engine.dir, "cls_token")
        .and_then(|t| inner.token_to_id(&t));

    // The windowing tokenizer, set as HF sets the backend tokenizer.
    let n_added_single = inner
        .get_post_processor()
        .map_or(0, |p| tokenizers::PostProcessor::added_tokens(p, false));
    if opts.max_seq_len < n_added_single + opts.doc_stride {
        return Err(Error::Input(format!(
            "doc_stride {} is too large for max_seq_len {}: at most max_seq_len - {} special tokens",
            opts.doc_stride, opts.max_seq_len, n_added_single
        )));
    }
    let mut windowing = inner.clone();
    windowing
        .with_truncation(Some(TruncationParams {
            max_length: opts.max_seq_len,
            stride: opts.doc_stride,
            strategy: if question_first {
                TruncationStrategy::OnlySecond
            } else {
                TruncationStrategy::OnlyFirst
            },
            direction: TruncationDirection::Right,
        }))
        .map_err(|e| Error::Input(format!("qa windows: {e}")))?;
    let ctx_seq = if question_first { 1 } else { 0 };

    let mut windows: Vec<Window> = Vec::new();
    for (i, &(question, context)) in items.iter().enumerate() {
        let what = |m: String| {
            if items.len() > 1 {
                Error::Input(format!("item {i}: {m}"))
            } else {
                Error::Input(m)
            }
        };
        if question.is_empty() {
            return Err(what("`question` cannot be empty".into()));
        }
        if context.trim().is_empty() {
            return Err(what("`context` cannot be empty".into()));
        }
        let pair = |t: &tokenizers::Tokenizer| {
            if question_first {
                t.encode_char_offsets((question, context), true)
            } else {
                t.encode_char_offsets((context, question), true)
            }
        };
        // Untruncated first: the checks that keep `tokenizers` from
        // panicking (its stride assertion) and give clear messages.
        let full =
            pair(inner).map_err(|e| Error::Tokenizer(format!("encoding question/context: {e}")))?;
        let seq_ids = full.get_sequence_ids();
        let n_ctx = seq_ids.iter().filter(|s| **s == Some(ctx_seq)).count();
        let n_q = seq_ids.iter().filter(|s| **s == Some(1 - ctx_seq)).count();
        if n_ctx == 0 {
            return Err(what("the context has no tokens".into()));
        }
        let total = full.get_ids().len();
        if total > opts.max_seq_len {
            let n_added = total - n_ctx - n_q;
            let budget = opts.max_seq_len as isize - n_added as isize - n_q as isize;
            if budget <= 0 {
                return Err(what(format!(
                    "the question has {n_q} tokens: with {n_added} special tokens no context fits in max_seq_len {}",
                    opts.max_seq_len
                )));
            }
            if opts.doc_stride as isize >= budget {
                return Err(what(format!(
                    "doc_stride {} must be less than the {budget} context tokens per window (max_seq_len {} - {n_q} question tokens - {n_added} special tokens)",
                    opts.doc_stride, opts.max_seq_len
                )));
            }
        }
        let mut enc = pair(&windowing)
            .map_err(|e| Error::Tokenizer(format!("encoding question/context: {e}")))?;
        let overflow = enc.take_overflowing();
        for w in std::iter::once(enc).chain(overflow) {
            let allowed: Vec<bool> = w
                .get_sequence_ids()
                .iter()
                .zip(w.get_ids())
                .map(|(s, &id)| {
                    // p_mask 0: context tokens (right padding; everything for
                    // left padding) and CLS tokens.
                    let p_mask = if question_first { *s != Some(1) } else { false };
                    !p_mask || Some(id) == cls_id
                })
                .collect();
            windows.push(Window {
                item: i,
                enc: w,
                allowed,
            });
        }
    }

    let seqs: Vec<SequenceIds> = windows
        .iter()
        .map(|w| SequenceIds {
            input_ids: w.enc.get_ids().to_vec(),
            token_type_ids: w.enc.get_type_ids().to_vec(),
        })
        .collect();
    let batch = Batch::pack(&seqs, c)?;
    let out = engine.forward(&batch)?;
    let HeadOutput::StartEnd { start, end } = &out.head else {
        return Err(Error::Input("model produced no start/end logits".into()));
    };

    let pre_topk = if opts.align_to_words {
        opts.top_k * 2 + 10
    } else {
        opts.top_k
    };
    // (score, start, end, answer) per item, in HF's insertion order.
    let mut acc: Vec<Vec<(f64, usize, usize, String)>> = vec![Vec::new(); items.len()];
    let mut min_null: Vec<f64> = vec![1_000_000.0; items.len()];
    for (wi, w) in windows.iter().enumerate() {
        let r = batch.seq_range(wi);
        let (s, e, null) = normalize(&start[r.clone()], &end[r], &w.allowed);
        if opts.handle_impossible_answer {
            min_null[w.item] = min_null[w.item].min(null as f64);
        }
        let context = items[w.item].1;
        for (si, ei, score) in decode_spans(&s, &e, pre_topk, opts.max_answer_len, &w.allowed) {
            let (cs, ce) = char_span(&w.enc, si, ei, ctx_seq, opts.align_to_words);
            let text = char_slice(context, cs, ce);
            let answers = &mut acc[w.item];
            let lower = text.to_lowercase();
            if let Some(a) = answers.iter_mut().find(|a| a.3.to_lowercase() == lower) {
                a.0 += score as f64;
            } else {
                answers.push((score as f64, cs, ce, text));
            }
        }
    }

    Ok(acc
        .into_iter()
        .zip(min_null)
        .map(|(mut answers, null)| {
            if opts.handle_impossible_answer {
                answers.push((null, 0, 0, String::new()));
            }
            // Stable, as Python's sorted.
            answers.sort_by(|a, b| b.0.total_cmp(&a.0));
            answers.truncate(opts.top_k);
            answers
                .into_iter()
                .map(|(score, start, end, answer)| Answer {
                    score: score as f32,
                    start,
                    end,
                    answer,
                })
                .collect()
        })
        .collect())
}

/// Masked softmax of start and end logits of one window; returns the
/// probabilities with position 0 zeroed and the null score start[0]*end[0].
fn normalize(start: &[f32], end: &[f32], allowed: &[bool]) -> (Vec<f32>, Vec<f32>, f32) {
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
fn decode_spans(
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

/// `np.argpartition(keys, kth)` for float32 as numpy 2.x runs it on AVX-512
/// machines (x86-simd-sort `avx512_argselect`: 8-lane vectors, 4x unrolled
/// partition, median-of-8 pivots), emulated lane by lane. Sub-arrays of at
/// most 256 elements, sorted there by bitonic networks, are sorted stably
/// here instead (this order matters only among equal keys).
fn np_argpartition(keys: &[f32], kth: usize) -> Vec<usize> {
    let n = keys.len();
    let mut arg: Vec<usize> = (0..n).collect();
    if n > 1 {
        let max_iters = 2 * ((n as f64).log2() as i64);
        argselect(keys, &mut arg, kth, 0, n - 1, max_iters);
    }
    arg
}

fn argselect(
    arr: &[f32],
    arg: &mut [usize],
    pos: usize,
    left: usize,
    right: usize,
    max_iters: i64,
) {
    if max_iters <= 0 || right + 1 - left <= 256 {
        arg[left..=right].sort_by(|&a, &b| {
            arr[a]
                .partial_cmp(&arr[b])
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        return;
    }
    let pivot = {
        let size = (right - left) / 8;
        let mut s: Vec<f32> = (1..=8).map(|k| arr[arg[left + k * size]]).collect();
        s.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        s[4]
    };
    let (pivot_index, smallest, biggest) = partition_unrolled(arr, arg, left, right + 1, pivot);
    if pivot != smallest && pos < pivot_index {
        argselect(arr, arg, pos, left, pivot_index - 1, max_iters - 1);
    } else if pivot != biggest && pos >= pivot_index {
        argselect(arr, arg, pos, pivot_index, right, max_iters - 1);
    }
}

const LANES: usize = 8;
const UNROLL: usize = 4;

/// One vector's partition: lanes below the pivot compress-stored at
/// `l_store`, the others at `r_end - count`; returns that count.
// `!(a >= b)` on purpose: NaN goes where numpy's AVX-512 compare puts it.
#[allow(clippy::neg_cmp_op_on_partial_ord)]
fn partition_vec(
    arr: &[f32],
    arg: &mut [usize],
    l_store: usize,
    r_end: usize,
    v: &[usize; LANES],
    pivot: f32,
) -> usize {
    let ge: Vec<usize> = v.iter().copied().filter(|&a| arr[a] >= pivot).collect();
    let lt: Vec<usize> = v.iter().copied().filter(|&a| !(arr[a] >= pivot)).collect();
    arg[l_store..l_store + lt.len()].copy_from_slice(&lt);
    arg[r_end - ge.len()..r_end].copy_from_slice(&ge);
    ge.len()
}

/// x86-simd-sort's `partition_avx512_unrolled<.., 4>` over arg[left..right)
/// (only reached with more than 256 elements).
#[allow(clippy::neg_cmp_op_on_partial_ord)]
fn partition_unrolled(
    arr: &[f32],
    arg: &mut [usize],
    mut left: usize,
    mut right: usize,
    pivot: f32,
) -> (usize, f32, f32) {
    let mut smallest = f32::INFINITY;
    let mut biggest = f32::NEG_INFINITY;
    let seen = |x: f32, s: &mut f32, b: &mut f32| {
        if x < *s {
            *s = x;
        }
        if *b < x {
            *b = x;
        }
    };
    for _ in 0..(right - left) % (UNROLL * LANES) {
        let x = arr[arg[left]];
        seen(x, &mut smallest, &mut biggest);
        if !(x < pivot) {
            right -= 1;
            arg.swap(left, right);
        } else {
            left += 1;
        }
    }
    if left == right {
        return (left, smallest, biggest);
    }
    let load =
        |arg: &[usize], at: usize| -> [usize; LANES] { arg[at..at + LANES].try_into().unwrap() };
    let vec_left: Vec<[usize; LANES]> =
        (0..UNROLL).map(|ii| load(arg, left + LANES * ii)).collect();
    let vec_right: Vec<[usize; LANES]> = (0..UNROLL)
        .map(|ii| load(arg, right - LANES * (UNROLL - ii)))
        .collect();
    let mut r_store = right - LANES;
    let mut l_store = left;
    left += UNROLL * LANES;
    right -= UNROLL * LANES;
    let step = |arg: &mut [usize],
                v: &[usize; LANES],
                l_store: &mut usize,
                r_store: &mut usize,
                s: &mut f32,
                b: &mut f32| {
        for &a in v {
            seen(arr[a], s, b);
        }
        let amount = partition_vec(arr, arg, *l_store, *r_store + LANES, v, pivot);
        *l_store += LANES - amount;
        *r_store -= amount;
    };
    while right != left {
        let vs: Vec<[usize; LANES]> = if (r_store + LANES) - right < left - l_store {
            right -= UNROLL * LANES;
            (0..UNROLL)
                .map(|ii| load(arg, right + ii * LANES))
                .collect()
        } else {
            let v = (0..UNROLL).map(|ii| load(arg, left + ii * LANES)).collect();
            left += UNROLL * LANES;
            v
        };
        for v in &vs {
            step(
                arg,
                v,
                &mut l_store,
                &mut r_store,
                &mut smallest,
                &mut biggest,
            );
        }
    }
    for v in vec_left.iter().chain(&vec_right) {
        step(
            arg,
            v,
            &mut l_store,
            &mut r_store,
            &mut smallest,
            &mut biggest,
        );
    }
    (l_store, smallest, biggest)
}

/// HF's `get_indices`: character span of tokens s..=e of a window.
fn char_span(
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
fn char_slice(text: &str, start: usize, end: usize) -> String {
    if start >= end {
        return String::new();
    }
    text.chars().skip(start).take(end - start).collect()
}

fn tokenizer_config(engine: &Engine) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(engine.dir.join("tokenizer_config.json")).ok()?;
    serde_json::from_str(&text).ok()
}

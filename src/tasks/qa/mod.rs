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
//! numpy 2.x does it on AVX-512 CPUs (see [`argpartition`]); other CPUs
//! (AVX2-only, ARM) may give that answer other start/end values in HF.

mod argpartition;
mod spans;

use crate::batch::{Batch, SequenceIds};
use crate::config::Head;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::output::{HeadOutput, Want};
use serde::Serialize;
use spans::{char_slice, char_span, decode_spans, normalize};
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
        let model_max = engine
            .tokenizer
            .settings
            .model_max_length
            .unwrap_or(usize::MAX);
        let max_seq_len = model_max.min(384);
        QaOptions {
            max_seq_len,
            doc_stride: default_doc_stride(max_seq_len),
            ..QaOptions::default()
        }
    }
}

/// The pipeline's window overlap for `max_seq_len`: `min(max_seq_len / 2, 128)`.
pub fn default_doc_stride(max_seq_len: usize) -> usize {
    (max_seq_len / 2).min(128)
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
    qa_many_via(engine, items, opts, &|b, w| engine.forward_want(b, w))
}

/// [`qa_many`] with its forward run by `run`.
pub fn qa_many_via(
    engine: &Engine,
    items: &[(&str, &str)],
    opts: &QaOptions,
    run: super::RunForward,
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
    let settings = &engine.tokenizer.settings;
    let question_first = !settings.pads_left;
    let cls_id = settings
        .special("cls_token")
        .and_then(|t| inner.token_to_id(t));

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
    let head = run(&batch, &Want::Head)?.into_head()?;
    let HeadOutput::StartEnd { start, end } = &head else {
        return Err(Error::Internal(
            "the QA head produced no start/end logits".into(),
        ));
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

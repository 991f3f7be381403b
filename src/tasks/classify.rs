//! Sequence classification (HF text-classification pipeline) and token
//! classification (token-classification pipeline, aggregation "none").

use super::{sigmoid, softmax};
use crate::config::Head;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::output::HeadOutput;
use crate::tokenize::Truncation;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelScore {
    pub label: String,
    pub score: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenLabel {
    pub entity: String,
    pub score: f32,
    pub index: usize,
    pub word: String,
    pub start: usize,
    pub end: usize,
}

fn empty_check(text: &str) -> Result<()> {
    if text.trim().is_empty() {
        return Err(Error::Input("empty text".into()));
    }
    Ok(())
}

/// Every label with its score, best first. Softmax, or sigmoid for
/// multi-label and single-logit models, plain logits for regression, as HF.
pub fn classify(engine: &Engine, text: &str, pair: Option<&str>) -> Result<Vec<LabelScore>> {
    let c = &engine.config;
    if c.head != Head::SequenceClassification {
        return Err(Error::Input(format!(
            "classify needs a *ForSequenceClassification model; got {}",
            c.architecture
        )));
    }
    empty_check(text)?;
    let (_, batch) = engine.encode_batch(&[(text, pair)], None, Truncation::LongestFirst)?;
    let out = engine.forward(&batch)?;
    let HeadOutput::SequenceLogits(logits) = &out.head else {
        return Err(Error::Input("model produced no sequence logits".into()));
    };
    let scores = match c.problem_type.as_deref() {
        Some("regression") => logits.clone(),
        Some("multi_label_classification") => logits.iter().map(|&x| sigmoid(x)).collect(),
        _ if c.num_labels == 1 => logits.iter().map(|&x| sigmoid(x)).collect(),
        _ => softmax(logits),
    };
    let mut res: Vec<LabelScore> = scores
        .iter()
        .enumerate()
        .map(|(i, &s)| LabelScore {
            label: c.label(i),
            score: s,
        })
        .collect();
    res.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(res)
}

/// Per-token labels (argmax of softmax), special tokens and `ignore` labels
/// left out, as the token-classification pipeline without aggregation.
pub fn classify_tokens(engine: &Engine, text: &str, ignore: &[&str]) -> Result<Vec<TokenLabel>> {
    let c = &engine.config;
    if c.head != Head::TokenClassification {
        return Err(Error::Input(format!(
            "classify --tokens needs a *ForTokenClassification model; got {}",
            c.architecture
        )));
    }
    empty_check(text)?;
    let (encs, batch) = engine.encode_batch(&[(text, None)], None, Truncation::LongestFirst)?;
    let out = engine.forward(&batch)?;
    let HeadOutput::TokenLogits(logits) = &out.head else {
        return Err(Error::Input("model produced no token logits".into()));
    };
    let e = &encs[0];
    let n = c.num_labels;
    let mut res = Vec::new();
    for i in 0..e.ids.len() {
        if e.sequence_ids[i].is_none() {
            continue;
        }
        let p = softmax(&logits[i * n..(i + 1) * n]);
        let best = super::top_k(&p, 1)[0];
        let entity = c.label(best);
        if ignore.contains(&entity.as_str()) {
            continue;
        }
        res.push(TokenLabel {
            entity,
            score: p[best],
            index: i,
            word: e.tokens[i].clone(),
            start: e.offsets[i].0,
            end: e.offsets[i].1,
        });
    }
    Ok(res)
}

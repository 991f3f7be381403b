//! Sequence classification (HF text-classification pipeline) and token
//! classification (token-classification pipeline, aggregation "none" and
//! "simple").

use super::{sigmoid, softmax, RunForward};
use crate::config::Head;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::output::{HeadOutput, Want};
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
    let mut all = classify_many_via(engine, &[(text, pair)], false, &|b, w| {
        engine.forward_want(b, w)
    })?;
    Ok(all.remove(0))
}

/// [`classify`] for many (text, pair) inputs in one forward run by `run`;
/// with `raw_scores` the scores are the logits themselves (TEI's `raw_scores`).
pub fn classify_many_via(
    engine: &Engine,
    items: &[(&str, Option<&str>)],
    raw_scores: bool,
    run: RunForward,
) -> Result<Vec<Vec<LabelScore>>> {
    let c = &engine.config;
    if c.head != Head::SequenceClassification {
        return Err(Error::Input(format!(
            "classify needs a *ForSequenceClassification model; got {}",
            c.architecture
        )));
    }
    for (text, _) in items {
        empty_check(text)?;
    }
    let (_, batch) = engine.encode_batch(items, None, Truncation::LongestFirst)?;
    let head = run(&batch, &Want::Head)?.into_head()?;
    let HeadOutput::SequenceLogits(all_logits) = &head else {
        return Err(Error::Internal(
            "the classifier produced no sequence logits".into(),
        ));
    };
    let n = c.num_labels;
    let mut res = Vec::with_capacity(items.len());
    for logits in all_logits.chunks_exact(n) {
        let scores = match c.problem_type.as_deref() {
            _ if raw_scores => logits.to_vec(),
            Some("regression") => logits.to_vec(),
            Some("multi_label_classification") => logits.iter().map(|&x| sigmoid(x)).collect(),
            _ if n == 1 => logits.iter().map(|&x| sigmoid(x)).collect(),
            _ => softmax(logits),
        };
        let mut labelled: Vec<LabelScore> = scores
            .iter()
            .enumerate()
            .map(|(i, &s)| LabelScore {
                label: c.label(i),
                score: s,
            })
            .collect();
        labelled.sort_by(|a, b| b.score.total_cmp(&a.score));
        res.push(labelled);
    }
    Ok(res)
}

/// Per-token labels (argmax of softmax), special tokens and `ignore` labels
/// left out, as the token-classification pipeline without aggregation.
pub fn classify_tokens(engine: &Engine, text: &str, ignore: &[&str]) -> Result<Vec<TokenLabel>> {
    classify_tokens_via(engine, text, ignore, &|b, w| engine.forward_want(b, w))
}

/// [`classify_tokens`] with its forward run by `run`.
pub fn classify_tokens_via(
    engine: &Engine,
    text: &str,
    ignore: &[&str],
    run: RunForward,
) -> Result<Vec<TokenLabel>> {
    let mut all = token_labels(engine, text, run)?;
    all.retain(|t| !ignore.contains(&t.entity.as_str()));
    Ok(all)
}

/// Adjacent tokens with the same entity type merged, as the pipeline's
/// `aggregation_strategy="simple"`: a `B-` tag starts a new group, the score is
/// the mean, the word is the tokens joined by the tokenizer's decoder. Groups
/// whose type is in `ignore` are dropped after grouping (as HF does).
pub fn classify_entities(engine: &Engine, text: &str, ignore: &[&str]) -> Result<Vec<EntityGroup>> {
    classify_entities_via(engine, text, ignore, &|b, w| engine.forward_want(b, w))
}

/// [`classify_entities`] with its forward run by `run`.
pub fn classify_entities_via(
    engine: &Engine,
    text: &str,
    ignore: &[&str],
    run: RunForward,
) -> Result<Vec<EntityGroup>> {
    let tokens = token_labels(engine, text, run)?;
    let tag = |e: &str| -> (bool, String) {
        match e.strip_prefix("B-") {
            Some(t) => (true, t.to_string()),
            None => (false, e.strip_prefix("I-").unwrap_or(e).to_string()),
        }
    };
    let mut groups: Vec<Vec<&TokenLabel>> = Vec::new();
    for t in &tokens {
        let (begins, ty) = tag(&t.entity);
        match groups.last_mut() {
            Some(g) if !begins && tag(&g[g.len() - 1].entity).1 == ty => g.push(t),
            _ => groups.push(vec![t]),
        }
    }
    let mut out = Vec::new();
    for g in groups {
        let entity_group = tag(&g[0].entity).1;
        if ignore.contains(&entity_group.as_str()) {
            continue;
        }
        let words: Vec<String> = g.iter().map(|t| t.word.clone()).collect();
        out.push(EntityGroup {
            entity_group,
            score: (g.iter().map(|t| t.score as f64).sum::<f64>() / g.len() as f64) as f32,
            word: engine.tokenizer.tokens_to_string(words)?,
            start: g[0].start,
            end: g[g.len() - 1].end,
        });
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EntityGroup {
    pub entity_group: String,
    pub score: f32,
    pub word: String,
    pub start: usize,
    pub end: usize,
}

/// Every non-special token with its best label.
fn token_labels(engine: &Engine, text: &str, run: RunForward) -> Result<Vec<TokenLabel>> {
    let c = &engine.config;
    if c.head != Head::TokenClassification {
        return Err(Error::Input(format!(
            "token classification needs a *ForTokenClassification model; got {}",
            c.architecture
        )));
    }
    empty_check(text)?;
    let (encs, batch) = engine.encode_batch(&[(text, None)], None, Truncation::LongestFirst)?;
    let head = run(&batch, &Want::Head)?.into_head()?;
    let HeadOutput::TokenLogits(logits) = &head else {
        return Err(Error::Internal(
            "the token classifier produced no token logits".into(),
        ));
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
        res.push(TokenLabel {
            entity: c.label(best),
            score: p[best],
            index: i,
            // The pipeline's word is convert_ids_to_tokens (an unknown
            // piece reads "<unk>"), not the tokenize() piece in e.tokens.
            word: engine
                .tokenizer
                .id_to_token(e.ids[i])
                .unwrap_or_else(|| e.tokens[i].clone()),
            start: e.offsets[i].0,
            end: e.offsets[i].1,
        });
    }
    Ok(res)
}

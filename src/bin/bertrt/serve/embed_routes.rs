//! TEI's model routes: `/embed`, `/embed_all`, `/predict`, `/rerank` and
//! `/`, which dispatches on the model's kind.

use super::error::ApiError;
use super::routes::{
    embed_seqs, need_head, opt_bool, parse_body, string_list, tokenize_texts, too_many, vectors,
    via_batcher, with_work, Body, Shared,
};
use super::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use bertrt::batch::SequenceIds;
use bertrt::config::Head;
use bertrt::tasks::classify;
use bertrt::tasks::embed::{Embedding, Pooling};
use bertrt::tokenize::Truncation;
use serde_json::Value;
use std::sync::Arc;

/// TEI's `/`: embed for encoders, predict for classifiers.
pub async fn root(st: Shared, body: Body) -> Result<Response, ApiError> {
    if st.0.engine.config.head == Head::SequenceClassification {
        predict(st, body).await
    } else {
        embed(st, body).await
    }
}

/// TEI's `truncation_direction`: `Right` (the default) or `Left`.
fn truncation_side(v: &Value) -> Result<Truncation, ApiError> {
    match v.get("truncation_direction") {
        None | Some(Value::Null) => Ok(Truncation::LongestFirst),
        Some(Value::String(d)) if d.eq_ignore_ascii_case("right") => Ok(Truncation::LongestFirst),
        Some(Value::String(d)) if d.eq_ignore_ascii_case("left") => {
            Ok(Truncation::LongestFirstLeft)
        }
        Some(d) => Err(ApiError::field(
            "truncation_direction",
            format!("{d} is not a direction: use \"Left\" or \"Right\""),
        )),
    }
}

/// `texts` with the folder's prompt named by `prompt_name` put before each,
/// as sentence-transformers does.
fn with_prompt(s: &AppState, v: &Value, texts: Vec<String>) -> Result<Vec<String>, ApiError> {
    let name = match v.get("prompt_name") {
        None | Some(Value::Null) => return Ok(texts),
        Some(Value::String(n)) => n,
        Some(_) => return Err(ApiError::field("prompt_name", "must be a string")),
    };
    let Some(prompt) = s.prompts.by_name.get(name) else {
        let known: Vec<&str> = s.prompts.by_name.keys().map(String::as_str).collect();
        return Err(ApiError::field(
            "prompt_name",
            format!(
                "the model folder has no prompt named {name:?} (config_sentence_transformers.json `prompts`: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        ));
    };
    if !s.prompts.pooled {
        return Err(ApiError::field(
            "prompt_name",
            "the folder's Pooling has include_prompt: false (the prompt's tokens left out of the pooling), which bertrt does not support",
        ));
    }
    Ok(texts.into_iter().map(|t| format!("{prompt}{t}")).collect())
}

/// The tokenized `inputs` of an `/embed` or `/embed_all` request.
async fn embed_inputs(s: &Arc<AppState>, v: &Value) -> Result<Vec<SequenceIds>, ApiError> {
    let texts = string_list(v.get("inputs"), "inputs", s.max_client_batch_size)?;
    let truncate = opt_bool(v, "truncate")?.unwrap_or(s.auto_truncate);
    let side = truncation_side(v)?;
    let texts = with_prompt(s, v, texts)?;
    tokenize_texts(s, texts, truncate, side, "inputs").await
}

pub async fn embed(State(s): Shared, body: Body) -> Result<Response, ApiError> {
    let v = parse_body(body)?;
    let normalize = opt_bool(&v, "normalize")?.unwrap_or(true);
    let seqs = embed_inputs(&s, &v).await?;
    let mut opts = s.embed_defaults.clone();
    opts.normalize = normalize;
    let (embeddings, work) = embed_seqs(&s, seqs, &opts).await?;
    Ok(with_work(Json(vectors(embeddings)?), work))
}

/// TEI's `/embed_all`: every token's last hidden state, as the model gives
/// it (no pooling, no normalisation).
pub async fn embed_all(State(s): Shared, body: Body) -> Result<Response, ApiError> {
    let v = parse_body(body)?;
    let seqs = embed_inputs(&s, &v).await?;
    let mut opts = s.embed_defaults.clone();
    opts.pooling = Pooling::None;
    opts.normalize = false;
    let (embeddings, work) = embed_seqs(&s, seqs, &opts).await?;
    let per_token = embeddings
        .into_iter()
        .map(|e| match e {
            Embedding::Tokens(t) => Ok(t),
            Embedding::Vector(_) => Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "pooling none gave a vector",
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(with_work(Json(per_token), work))
}

/// A text and its optional pair.
type TextPair = (String, Option<String>);

/// TEI's predict input: a text, a [text, pair], or a list of those; true
/// when it was a single item.
fn predict_items(v: Option<&Value>, max: usize) -> Result<(Vec<TextPair>, bool), ApiError> {
    let one = |x: &Value, f: &str| -> Result<TextPair, ApiError> {
        match x {
            Value::String(t) if !t.trim().is_empty() => Ok((t.clone(), None)),
            Value::Array(p)
                if p.len() == 2
                    && p.iter()
                        .all(|q| q.as_str().is_some_and(|q| !q.trim().is_empty())) =>
            {
                Ok((
                    p[0].as_str().unwrap_or_default().into(),
                    p[1].as_str().map(String::from),
                ))
            }
            _ => Err(ApiError::field(
                f,
                "must be a non-empty string or a [text, text_pair] list",
            )),
        }
    };
    match v {
        None | Some(Value::Null) => Err(ApiError::field("inputs", "missing")),
        Some(x @ Value::String(_)) => Ok((vec![one(x, "inputs")?], true)),
        Some(pair @ Value::Array(a)) if a.len() == 2 && a.iter().all(Value::is_string) => {
            Ok((vec![one(pair, "inputs")?], true))
        }
        Some(Value::Array(a)) if !a.is_empty() => {
            too_many("inputs", a.len(), max)?;
            let items = a
                .iter()
                .enumerate()
                .map(|(i, x)| one(x, &format!("inputs[{i}]")))
                .collect::<Result<_, _>>()?;
            Ok((items, false))
        }
        Some(Value::Array(_)) => Err(ApiError::field("inputs", "must not be empty")),
        Some(_) => Err(ApiError::field(
            "inputs",
            "must be a string, a [text, text_pair] list, or a list of those",
        )),
    }
}

/// Pairs are cut longest-first from the end to the model's limit, as the
/// HF pipeline and CrossEncoder do; other settings are refused by name.
fn pairs_truncation_only(v: &Value, route: &str) -> Result<(), ApiError> {
    if opt_bool(v, "truncate")? == Some(false) {
        return Err(ApiError::field(
            "truncate",
            format!("false is not supported on {route}: inputs are cut to the model's limit, as the HF pipeline does"),
        ));
    }
    if truncation_side(v)? != Truncation::LongestFirst {
        return Err(ApiError::field(
            "truncation_direction",
            format!("only Right on {route} (pairs are cut longest-first from the end)"),
        ));
    }
    Ok(())
}

pub async fn predict(State(s): Shared, body: Body) -> Result<Response, ApiError> {
    need_head(&s, "/predict", &[Head::SequenceClassification])?;
    let v = parse_body(body)?;
    let (items, single) = predict_items(v.get("inputs"), s.max_client_batch_size)?;
    let raw_scores = opt_bool(&v, "raw_scores")?.unwrap_or(false);
    pairs_truncation_only(&v, "/predict")?;
    let (mut res, work) = via_batcher(&s, move |e, run| {
        let refs: Vec<(&str, Option<&str>)> = items
            .iter()
            .map(|(t, p)| (t.as_str(), p.as_deref()))
            .collect();
        classify::classify_many_via(e, &refs, raw_scores, run)
    })
    .await?;
    // Typed (not json!) so scores print as the f32 they are.
    Ok(if single {
        with_work(Json(res.remove(0)), work)
    } else {
        with_work(Json(res), work)
    })
}

#[derive(serde::Serialize)]
struct Ranked {
    index: usize,
    score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
}

/// TEI's `/rerank`: a one-label cross-encoder over (query, text) pairs,
/// best first. Scores are sigmoid of the logit, as CrossEncoder's default
/// for one label; `raw_scores` gives the logit itself.
pub async fn rerank(State(s): Shared, body: Body) -> Result<Response, ApiError> {
    need_head(&s, "/rerank", &[Head::SequenceClassification])?;
    let labels = s.engine.config.num_labels;
    if labels != 1 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("/rerank needs a cross-encoder with one label; this classifier has {labels} (num_labels): use /predict"),
        ));
    }
    let v = parse_body(body)?;
    let query = match v.get("query") {
        Some(Value::String(q)) if !q.trim().is_empty() => q.clone(),
        Some(Value::String(_)) => return Err(ApiError::field("query", "must not be empty")),
        None | Some(Value::Null) => return Err(ApiError::field("query", "missing")),
        Some(_) => return Err(ApiError::field("query", "must be a string")),
    };
    let texts = string_list(v.get("texts"), "texts", s.max_client_batch_size)?;
    let raw_scores = opt_bool(&v, "raw_scores")?.unwrap_or(false);
    let return_text = opt_bool(&v, "return_text")?.unwrap_or(false);
    pairs_truncation_only(&v, "/rerank")?;
    let texts2 = texts.clone();
    let (scores, work) = via_batcher(&s, move |e, run| {
        let pairs: Vec<(&str, Option<&str>)> = texts2
            .iter()
            .map(|t| (query.as_str(), Some(t.as_str())))
            .collect();
        classify::classify_many_via(e, &pairs, raw_scores, run)
    })
    .await?;
    let mut ranked: Vec<Ranked> = scores
        .iter()
        .zip(texts)
        .enumerate()
        .map(|(index, (sc, text))| Ranked {
            index,
            score: sc[0].score,
            text: return_text.then_some(text),
        })
        .collect();
    // Stable: equal scores keep the texts' order.
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(with_work(Json(ranked), work))
}

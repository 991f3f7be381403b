//! bertrt's task routes with HF Inference-API payloads
//! (`{"inputs": ..., "parameters": {...}}`): each runs the library's task
//! helper (so answers equal the CLI's) with its forwards going through the
//! shared batcher.

use super::error::ApiError;
use super::routes::{need_head, opt_usize, parse_body, via_batcher, with_work, Body, Shared};
use axum::extract::State;
use axum::response::Response;
use axum::Json;
use bertrt::config::Head;
use bertrt::tasks::{classify, detect, fill_mask, qa};
use serde_json::{json, Value};

/// `inputs` as one non-empty text.
fn one_text(v: &Value) -> Result<String, ApiError> {
    match v.get("inputs") {
        Some(Value::String(t)) if !t.trim().is_empty() => Ok(t.clone()),
        Some(Value::String(_)) => Err(ApiError::field("inputs", "must not be empty")),
        None | Some(Value::Null) => Err(ApiError::field("inputs", "missing")),
        Some(_) => Err(ApiError::field("inputs", "must be a string")),
    }
}

fn params(v: &Value) -> Result<Value, ApiError> {
    match v.get("parameters") {
        None | Some(Value::Null) => Ok(json!({})),
        Some(p @ Value::Object(_)) => Ok(p.clone()),
        Some(_) => Err(ApiError::field("parameters", "must be an object")),
    }
}

pub async fn fill_mask_route(State(s): Shared, body: Body) -> Result<Response, ApiError> {
    need_head(&s, "/fill-mask", &[Head::MaskedLm, Head::AlbertPreTraining])?;
    let v = parse_body(body)?;
    let text = one_text(&v)?;
    let top_k = opt_usize(&params(&v)?, "top_k", "parameters.top_k")?.unwrap_or(5);
    let (mut res, work) = via_batcher(&s, move |e, run| {
        fill_mask::fill_mask_via(e, &text, top_k, run)
    })
    .await?;
    // As the HF pipeline: one mask gives a flat list.
    Ok(if res.len() == 1 {
        with_work(Json(res.remove(0)), work)
    } else {
        with_work(Json(res), work)
    })
}

pub async fn question_answering(State(s): Shared, body: Body) -> Result<Response, ApiError> {
    need_head(&s, "/question-answering", &[Head::QuestionAnswering])?;
    let v = parse_body(body)?;
    let inputs = v
        .get("inputs")
        .filter(|x| x.is_object())
        .ok_or_else(|| ApiError::field("inputs", "must be an object {question, context}"))?;
    let text = |f: &str| match inputs.get(f) {
        Some(Value::String(t)) if !t.trim().is_empty() => Ok(t.clone()),
        _ => Err(ApiError::field(
            &format!("inputs.{f}"),
            "must be a non-empty string",
        )),
    };
    let (question, context) = (text("question")?, text("context")?);
    let p = params(&v)?;
    let pf = |f: &str| opt_usize(&p, f, &format!("parameters.{f}"));
    let defaults = qa::QaOptions::hf_defaults(&s.engine);
    let max_seq_len = pf("max_seq_len")?.unwrap_or(defaults.max_seq_len);
    let opts = qa::QaOptions {
        top_k: pf("top_k")?.unwrap_or(1),
        doc_stride: pf("doc_stride")?.unwrap_or((max_seq_len / 2).min(128)),
        max_answer_len: pf("max_answer_len")?.unwrap_or(defaults.max_answer_len),
        max_question_len: pf("max_question_len")?.unwrap_or(defaults.max_question_len),
        handle_impossible_answer: match p.get("handle_impossible_answer") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(ApiError::field(
                    "parameters.handle_impossible_answer",
                    "must be true or false",
                ))
            }
        },
        max_seq_len,
        ..defaults
    };
    let top_k = opts.top_k;
    let (mut res, work) = via_batcher(&s, move |e, run| {
        qa::qa_many_via(e, &[(&question, &context)], &opts, run)
    })
    .await?;
    let mut res = res.remove(0);
    Ok(if top_k == 1 && res.len() == 1 {
        with_work(Json(res.remove(0)), work)
    } else {
        with_work(Json(res), work)
    })
}

pub async fn token_classification(State(s): Shared, body: Body) -> Result<Response, ApiError> {
    need_head(&s, "/token-classification", &[Head::TokenClassification])?;
    let v = parse_body(body)?;
    let text = one_text(&v)?;
    let p = params(&v)?;
    let simple = match p.get("aggregation_strategy") {
        None | Some(Value::Null) => false,
        Some(Value::String(a)) if a == "none" => false,
        Some(Value::String(a)) if a == "simple" => true,
        Some(_) => {
            return Err(ApiError::field(
                "parameters.aggregation_strategy",
                "use \"none\" or \"simple\" (first, average and max are not supported)",
            ))
        }
    };
    Ok(if simple {
        let (r, work) = via_batcher(&s, move |e, run| {
            classify::classify_entities_via(e, &text, &["O"], run)
        })
        .await?;
        with_work(Json(r), work)
    } else {
        let (r, work) = via_batcher(&s, move |e, run| {
            classify::classify_tokens_via(e, &text, &["O"], run)
        })
        .await?;
        with_work(Json(r), work)
    })
}

pub async fn detect_route(State(s): Shared, body: Body) -> Result<Response, ApiError> {
    need_head(&s, "/detect", &[Head::Discriminator])?;
    let v = parse_body(body)?;
    let text = one_text(&v)?;
    let (res, work) = via_batcher(&s, move |e, run| detect::detect_via(e, &text, run)).await?;
    Ok(with_work(Json(res), work))
}

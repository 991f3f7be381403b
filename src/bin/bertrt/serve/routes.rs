//! The routes: TEI's (`/embed`, `/predict`, `/tokenize`, `/info`, ...) and
//! bertrt's task routes with HF Inference-API payloads. Each handler parses
//! and validates its JSON (422 naming the field), tokenizes off the async
//! threads, and runs the model through the shared batcher.

use super::error::ApiError;
use super::metrics::Work;
use super::{openai, task_routes, AppState};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bertrt::batch::{Batch, SequenceIds};
use bertrt::config::Head;
use bertrt::tasks::embed::{split_embeddings, EmbedOptions, Embedding};
use bertrt::tasks::RunForward;
use bertrt::tokenize::Truncation;
use bertrt::Engine;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

pub type Shared = State<Arc<AppState>>;
pub type Body = Result<Bytes, BytesRejection>;

/// Every route: (path, label for metrics). Anything else is counted as "other".
pub const ROUTES: &[&str] = &[
    "/health",
    "/info",
    "/metrics",
    "/api-doc/openapi.json",
    "/",
    "/embed",
    "/embed_all",
    "/v1/embeddings",
    "/embeddings",
    "/predict",
    "/rerank",
    "/tokenize",
    "/decode",
    "/fill-mask",
    "/question-answering",
    "/token-classification",
    "/detect",
];

pub fn router(state: Arc<AppState>) -> Router {
    use super::embed_routes as er;
    Router::new()
        .route("/health", get(health))
        .route("/info", get(info))
        .route("/metrics", get(metrics))
        .route("/api-doc/openapi.json", get(openapi_doc))
        .route("/", post(er::root))
        .route("/embed", post(er::embed))
        .route("/embed_all", post(er::embed_all))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/embeddings", post(openai::embeddings))
        .route("/predict", post(er::predict))
        .route("/rerank", post(er::rerank))
        .route("/tokenize", post(tokenize))
        .route("/decode", post(decode))
        .route("/fill-mask", post(task_routes::fill_mask_route))
        .route("/question-answering", post(task_routes::question_answering))
        .route(
            "/token-classification",
            post(task_routes::token_classification),
        )
        .route("/detect", post(task_routes::detect_route))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route; see GET /info") })
        .with_state(state)
}

/// The path as a metrics label: a known route, else "other" (so unknown
/// paths cannot grow the label set).
pub fn route_label(path: &str) -> &'static str {
    ROUTES
        .iter()
        .find(|r| **r == path)
        .copied()
        .unwrap_or("other")
}

pub fn is_openai_route(path: &str) -> bool {
    path == "/v1/embeddings" || path == "/embeddings"
}

/// The body as JSON: over the size limit is 413, anything else 422.
pub fn parse_body(body: Body) -> Result<Value, ApiError> {
    let bytes =
        body.map_err(|r| ApiError::new(r.status(), format!("request body: {}", r.body_text())))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("request body is not valid JSON: {e}"),
        )
    })
}

/// `field` as a list of non-empty strings (a single string is a list of one),
/// at most `max` of them.
pub fn string_list(v: Option<&Value>, field: &str, max: usize) -> Result<Vec<String>, ApiError> {
    let items: Vec<&Value> = match v {
        None | Some(Value::Null) => return Err(ApiError::field(field, "missing")),
        Some(s @ Value::String(_)) => vec![s],
        Some(Value::Array(a)) => a.iter().collect(),
        Some(_) => {
            return Err(ApiError::field(
                field,
                "must be a string or a list of strings",
            ))
        }
    };
    if items.is_empty() {
        return Err(ApiError::field(field, "must not be empty"));
    }
    too_many(field, items.len(), max)?;
    items
        .iter()
        .enumerate()
        .map(|(i, x)| match x.as_str() {
            Some(s) if !s.trim().is_empty() => Ok(s.to_string()),
            Some(_) => Err(ApiError::field(
                &format!("{field}[{i}]"),
                "must not be empty",
            )),
            None => Err(ApiError::field(
                &format!("{field}[{i}]"),
                "must be a string",
            )),
        })
        .collect()
}

pub fn too_many(field: &str, n: usize, max: usize) -> Result<(), ApiError> {
    if n > max {
        return Err(ApiError {
            param: Some(field.into()),
            ..ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("`{field}` has {n} items; the limit is {max} (--max-client-batch-size)"),
            )
        });
    }
    Ok(())
}

pub fn opt_bool(v: &Value, field: &str) -> Result<Option<bool>, ApiError> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::field(field, "must be true or false")),
    }
}

/// `v[key]` as a positive integer; errors name the field as `name`.
pub fn opt_usize(v: &Value, key: &str, name: &str) -> Result<Option<usize>, ApiError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_u64()
            .filter(|&n| n >= 1)
            .map(|n| Some(n as usize))
            .ok_or_else(|| ApiError::field(name, "must be a positive integer")),
    }
}

/// Tokenizes `texts` (on a blocking thread) within the input limit: cut
/// (from the end, or the start with `TruncationDirection::Left`) when
/// `truncate`, else 413 naming the limit.
pub async fn tokenize_texts(
    s: &Arc<AppState>,
    texts: Vec<String>,
    truncate: bool,
    side: Truncation,
    field: &'static str,
) -> Result<Vec<SequenceIds>, ApiError> {
    let s = s.clone();
    blocking(move || {
        let limit = s.max_input_length();
        let mut seqs = Vec::with_capacity(texts.len());
        for (i, t) in texts.iter().enumerate() {
            let e = s
                .engine
                .tokenizer
                .encode(t, None, limit, side)
                .map_err(ApiError::from_lib)?;
            if e.truncated_tokens > 0 {
                if !truncate {
                    return Err(ApiError {
                        param: Some(format!("{field}[{i}]")),
                        ..ApiError::new(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            format!(
                                "`{field}[{i}]` has {} tokens; the limit is {limit} (send truncate: true, or start with --auto-truncate true)",
                                e.ids.len() + e.truncated_tokens
                            ),
                        )
                    });
                }
                tracing::warn!("{field}[{i}] truncated by {} tokens to {limit}", e.truncated_tokens);
            }
            seqs.push(SequenceIds {
                input_ids: e.ids,
                token_type_ids: e.type_ids,
            });
        }
        Ok(seqs)
    })
    .await
}

pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("worker: {e}")))?
}

/// Runs each sequence as its own batcher request (so they can share
/// forwards with other clients' requests) and pools them with `opts`.
pub async fn embed_seqs(
    s: &Arc<AppState>,
    seqs: Vec<SequenceIds>,
    opts: &EmbedOptions,
) -> Result<(Vec<Embedding>, Work), ApiError> {
    let mut pending = Vec::with_capacity(seqs.len());
    for seq in seqs {
        let (tx, rx) = tokio::sync::oneshot::channel();
        s.batcher
            .submit_want(
                vec![seq],
                opts.want(),
                Box::new(move |r| {
                    let _ = tx.send(r);
                }),
            )
            .map_err(ApiError::from_lib)?;
        pending.push(rx);
    }
    let mut out = Vec::with_capacity(pending.len());
    let mut work = Work::default();
    for rx in pending {
        let r = rx
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the batcher dropped a request",
                )
            })?
            .map_err(ApiError::from_lib)?;
        work.add(&r);
        let mut pooled = r
            .output
            .into_embeddings()
            .and_then(|rows| split_embeddings(&s.engine.config, &r.batch, rows, opts))
            .map_err(ApiError::from_lib)?;
        out.append(&mut pooled);
    }
    Ok((out, work))
}

/// Pooled vectors, or 400 when the folder's pooling is per-token.
pub fn vectors(embeddings: Vec<Embedding>) -> Result<Vec<Vec<f32>>, ApiError> {
    embeddings
        .into_iter()
        .map(|e| match e {
            Embedding::Vector(v) => Ok(v),
            Embedding::Tokens(_) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "the model folder's pooling is per-token: use /embed_all",
            )),
        })
        .collect()
}

/// Runs a library task helper on a blocking thread with its forwards going
/// through the shared batcher, so they pack with other clients' requests.
pub async fn via_batcher<T: Send + 'static>(
    s: &Arc<AppState>,
    task: impl FnOnce(&Engine, RunForward) -> bertrt::Result<T> + Send + 'static,
) -> Result<(T, Work), ApiError> {
    let s = s.clone();
    blocking(move || {
        let work = Mutex::new(Work::default());
        let run = |b: &Batch, want: &bertrt::output::Want| {
            let r = s.batcher.forward_timed(b, want)?;
            work.lock().unwrap_or_else(|p| p.into_inner()).add(&r);
            Ok(r.output)
        };
        let out = task(&s.engine, &run).map_err(ApiError::from_lib)?;
        Ok((out, work.into_inner().unwrap_or_else(|p| p.into_inner())))
    })
    .await
}

/// `r` with `w` attached for the request's log line.
pub fn with_work(r: impl IntoResponse, w: Work) -> Response {
    let mut r = r.into_response();
    r.extensions_mut().insert(w);
    r
}

fn head_name(h: Head) -> &'static str {
    match h {
        Head::Base => "no task head (a base encoder: embeddings only)",
        Head::MaskedLm => "a masked-LM head",
        Head::QuestionAnswering => "a question-answering head",
        Head::SequenceClassification => "a sequence-classification head",
        Head::TokenClassification => "a token-classification head",
        Head::Discriminator => "an ELECTRA discriminator head",
        Head::AlbertPreTraining => "an ALBERT pre-training head (MLM + sentence order)",
    }
}

/// 400 unless the model has one of `heads`.
pub fn need_head(s: &AppState, route: &str, heads: &[Head]) -> Result<(), ApiError> {
    let c = &s.engine.config;
    if heads.contains(&c.head) {
        return Ok(());
    }
    let wanted: Vec<&str> = heads.iter().map(|h| head_name(*h)).collect();
    Err(ApiError::new(
        StatusCode::BAD_REQUEST,
        format!(
            "{route} needs {}; this model ({}) has {}",
            wanted.join(" or "),
            c.architecture,
            head_name(c.head)
        ),
    ))
}

/// The OpenAPI document, at TEI's path (written by hand; checked to parse
/// and to list every route in tests/serve.rs).
pub const OPENAPI: &str = include_str!("openapi.json");

async fn openapi_doc() -> Response {
    ([("content-type", "application/json")], OPENAPI).into_response()
}

async fn metrics(State(s): Shared) -> Response {
    let m = &s.metrics;
    let st = s.batcher.stats();
    m.queue_size.set(s.batcher.queue_len() as i64);
    m.queue_tokens.set(s.batcher.queued_tokens() as i64);
    m.in_flight.set(s.requests_in_flight() as i64);
    m.max_requests_in_batch.set(st.max_requests_in_batch as i64);
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.render(),
    )
        .into_response()
}

async fn health() -> StatusCode {
    // The server listens only after the model loaded and a warm-up forward ran.
    StatusCode::OK
}

async fn info(State(s): Shared) -> Json<Value> {
    let c = &s.engine.config;
    let model_type = match c.head {
        Head::SequenceClassification => json!({"classifier": {"id2label": c.id2label}}),
        _ => {
            json!({"embedding": {"pooling": format!("{:?}", s.embed_defaults.pooling).to_lowercase()}})
        }
    };
    Json(json!({
        "model_id": s.model_id,
        "model_dtype": s.dtype,
        "model_type": model_type,
        "architecture": c.architecture,
        "head": head_name(c.head),
        "backend": s.engine.backend_name(),
        "max_concurrent_requests": s.max_concurrent_requests,
        "max_input_length": s.max_input_length(),
        "max_batch_tokens": s.batcher.config().max_batch_tokens,
        "max_batch_requests": (s.batcher.config().max_batch_requests != usize::MAX)
            .then_some(s.batcher.config().max_batch_requests),
        "max_client_batch_size": s.max_client_batch_size,
        "auto_truncate": s.auto_truncate,
        "version": env!("CARGO_PKG_VERSION"),
        "sha": option_env!("BERTRT_GIT_COMMIT"),
    }))
}

async fn tokenize(State(s): Shared, body: Body) -> Result<Response, ApiError> {
    let v = parse_body(body)?;
    let texts = string_list(v.get("inputs"), "inputs", s.max_client_batch_size)?;
    if opt_bool(&v, "add_special_tokens")? == Some(false) {
        return Err(ApiError::field(
            "add_special_tokens",
            "false is not supported",
        ));
    }
    let s2 = s.clone();
    let res = blocking(move || {
        let limit = s2.max_input_length();
        texts
            .iter()
            .map(|t| {
                let e = s2
                    .engine
                    .tokenizer
                    .encode(t, None, limit, Truncation::LongestFirst)
                    .map_err(ApiError::from_lib)?;
                Ok(e.ids
                    .iter()
                    .enumerate()
                    .map(|(i, id)| {
                        let special = e.sequence_ids[i].is_none();
                        let (a, b) = e.offsets[i];
                        json!({"id": id, "text": e.tokens[i], "special": special,
                               "start": (!special).then_some(a), "stop": (!special).then_some(b)})
                    })
                    .collect::<Vec<_>>())
            })
            .collect::<Result<Vec<_>, ApiError>>()
    })
    .await?;
    Ok(Json(res).into_response())
}

/// TEI's `/decode`: `ids` (one list of token ids, or a list of them) back to
/// text, `skip_special_tokens` (default true); always a list of strings.
async fn decode(State(s): Shared, body: Body) -> Result<Response, ApiError> {
    let v = parse_body(body)?;
    let vocab = s.engine.tokenizer.vocab_size();
    let id_list = |x: &Value| -> Result<Vec<u32>, ApiError> {
        let Value::Array(a) = x else {
            return Err(ApiError::field("ids", "must be a list of token ids"));
        };
        a.iter()
            .map(|i| match i.as_u64() {
                Some(i) if (i as usize) < vocab => Ok(i as u32),
                _ => Err(ApiError::field(
                    "ids",
                    format!("{i} is not a token id of this tokenizer (0..{vocab})"),
                )),
            })
            .collect()
    };
    let lists: Vec<Vec<u32>> = match v.get("ids") {
        None | Some(Value::Null) => return Err(ApiError::field("ids", "missing")),
        Some(Value::Array(a)) if a.first().is_some_and(Value::is_array) => {
            too_many("ids", a.len(), s.max_client_batch_size)?;
            a.iter().map(id_list).collect::<Result<_, _>>()?
        }
        Some(x) => vec![id_list(x)?],
    };
    let skip = opt_bool(&v, "skip_special_tokens")?.unwrap_or(true);
    let s2 = s.clone();
    let texts = blocking(move || {
        lists
            .iter()
            .map(|ids| {
                s2.engine
                    .tokenizer
                    .decode(ids, skip)
                    .map_err(ApiError::from_lib)
            })
            .collect::<Result<Vec<String>, ApiError>>()
    })
    .await?;
    Ok(Json(texts).into_response())
}

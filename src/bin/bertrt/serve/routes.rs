//! The routes: TEI's (`/embed`, `/predict`, `/tokenize`, `/info`, ...) and
//! bertrt's task routes with HF Inference-API payloads. Each handler parses
//! and validates its JSON (422 naming the field), tokenizes off the async
//! threads, and runs the model through the shared batcher.

use super::error::ApiError;
use super::{openai, task_routes, AppState};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bertrt::batch::SequenceIds;
use bertrt::config::Head;
use bertrt::tasks::classify;
use bertrt::tasks::embed::{pool_embeddings, Embedding, Pooling};
use bertrt::tokenize::Truncation;
use bertrt::Engine;
use serde_json::{json, Value};
use std::sync::Arc;

pub type Shared = State<Arc<AppState>>;
pub type Body = Result<Bytes, BytesRejection>;

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/info", get(info))
        .route("/metrics", get(metrics))
        .route("/api-doc/openapi.json", get(openapi_doc))
        .route("/", post(root))
        .route("/embed", post(embed))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/embeddings", post(openai::embeddings))
        .route("/predict", post(predict))
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

/// Tokenizes `texts` (on a blocking thread) within the input limit: cut when
/// `truncate`, else 413 naming the limit. Returns the sequences and their tokens.
pub async fn tokenize_texts(
    s: &Arc<AppState>,
    texts: Vec<String>,
    truncate: bool,
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
                .encode(t, None, limit, Truncation::LongestFirst)
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

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("worker: {e}")))?
}

/// Runs each sequence as its own batcher request (so they can share
/// forwards with other clients' requests) and pools them.
pub async fn embed_seqs(
    s: &Arc<AppState>,
    seqs: Vec<SequenceIds>,
    normalize: bool,
) -> Result<Vec<Vec<f32>>, ApiError> {
    let mut opts = s.embed_defaults.clone();
    opts.normalize = normalize;
    if opts.pooling == Pooling::None {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the model folder's pooling is per-token; /embed_all is not served yet",
        ));
    }
    let mut pending = Vec::with_capacity(seqs.len());
    for seq in seqs {
        let (tx, rx) = tokio::sync::oneshot::channel();
        s.batcher
            .submit_with(
                vec![seq],
                Box::new(move |r| {
                    let _ = tx.send(r);
                }),
            )
            .map_err(ApiError::from_lib)?;
        pending.push(rx);
    }
    let mut out = Vec::with_capacity(pending.len());
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
        match pool_embeddings(&s.engine.config, &r.batch, &r.output, &opts)
            .map_err(ApiError::from_lib)?
            .pop()
        {
            Some(Embedding::Vector(v)) => out.push(v),
            _ => {
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "pooling gave no vector",
                ))
            }
        }
    }
    Ok(out)
}

/// Runs a task helper alone on the engine (between batches).
pub async fn exclusive<T: Send + 'static>(
    s: &Arc<AppState>,
    work: impl FnOnce(&Engine) -> bertrt::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    s.batcher
        .submit_exclusive(work, move |r| {
            let _ = tx.send(r);
        })
        .map_err(ApiError::from_lib)?;
    rx.await
        .map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the batcher dropped a request",
            )
        })?
        .map_err(ApiError::from_lib)
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
        "model_dtype": "float32",
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

async fn metrics(State(s): Shared) -> Response {
    let st = s.batcher.stats();
    let mut t = String::new();
    t.push_str("# TYPE bertrt_requests_total counter\n");
    for ((route, status), n) in s.responses.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        t.push_str(&format!(
            "bertrt_requests_total{{route={route:?},status=\"{status}\"}} {n}\n"
        ));
    }
    for (name, kind, v) in [
        ("bertrt_batches_total", "counter", st.batches),
        ("bertrt_batched_requests_total", "counter", st.requests),
        ("bertrt_tokens_total", "counter", st.tokens),
        ("bertrt_failed_batches_total", "counter", st.failed_batches),
        (
            "bertrt_max_requests_in_batch",
            "gauge",
            st.max_requests_in_batch,
        ),
        ("bertrt_queue_size", "gauge", s.batcher.queue_len() as u64),
        (
            "bertrt_queue_tokens",
            "gauge",
            s.batcher.queued_tokens() as u64,
        ),
        (
            "bertrt_requests_in_flight",
            "gauge",
            s.requests_in_flight() as u64,
        ),
    ] {
        t.push_str(&format!("# TYPE {name} {kind}\n{name} {v}\n"));
    }
    ([("content-type", "text/plain; version=0.0.4")], t).into_response()
}

/// TEI's `/`: embed for encoders, predict for classifiers.
async fn root(st: Shared, body: Body) -> Result<Response, ApiError> {
    if st.0.engine.config.head == Head::SequenceClassification {
        predict(st, body).await
    } else {
        embed(st, body).await
    }
}

async fn embed(State(s): Shared, body: Body) -> Result<Response, ApiError> {
    let v = parse_body(body)?;
    let texts = string_list(v.get("inputs"), "inputs", s.max_client_batch_size)?;
    let normalize = opt_bool(&v, "normalize")?.unwrap_or(true);
    let truncate = opt_bool(&v, "truncate")?.unwrap_or(s.auto_truncate);
    match v.get("truncation_direction").and_then(Value::as_str) {
        None | Some("right") | Some("Right") => {}
        Some(d) => {
            return Err(ApiError::field(
                "truncation_direction",
                format!("'{d}' is not supported; only right"),
            ))
        }
    }
    if !matches!(v.get("prompt_name"), None | Some(Value::Null)) {
        return Err(ApiError::field(
            "prompt_name",
            "not supported: bertrt does not read prompts from the model folder",
        ));
    }
    let seqs = tokenize_texts(&s, texts, truncate, "inputs").await?;
    Ok(Json(embed_seqs(&s, seqs, normalize).await?).into_response())
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

async fn predict(State(s): Shared, body: Body) -> Result<Response, ApiError> {
    need_head(&s, "/predict", &[Head::SequenceClassification])?;
    let v = parse_body(body)?;
    let (items, single) = predict_items(v.get("inputs"), s.max_client_batch_size)?;
    if opt_bool(&v, "raw_scores")? == Some(true) {
        return Err(ApiError::field(
            "raw_scores",
            "true is not supported yet (scores are softmax/sigmoid, as HF's pipeline)",
        ));
    }
    let res = exclusive(&s, move |e| {
        items
            .iter()
            .map(|(t, p)| classify::classify(e, t, p.as_deref()))
            .collect::<bertrt::Result<Vec<_>>>()
    })
    .await?;
    // Typed (not json!) so scores print as the f32 they are.
    Ok(if single {
        Json(&res[0]).into_response()
    } else {
        Json(&res).into_response()
    })
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

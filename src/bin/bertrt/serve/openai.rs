//! OpenAI's embeddings API (`/v1/embeddings`, and `/embeddings` as TEI has
//! it): `input` as text(s) or token-id arrays, `encoding_format` float or
//! base64 (little-endian f32), the model echoed, usage counted; errors in
//! OpenAI's shape.

use super::error::ApiError;
use super::routes::{
    embed_seqs, parse_body, string_list, tokenize_texts, too_many, vectors, with_work, Body, Shared,
};
use axum::extract::State;
use axum::response::Response;
use axum::Json;
use base64::Engine as _;
use bertrt::batch::SequenceIds;
use bertrt::tokenize::Truncation;
use serde_json::{json, Value};

/// Typed (not json!) so floats print as the f32 they are.
#[derive(serde::Serialize)]
struct List {
    object: &'static str,
    data: Vec<Item>,
    model: String,
    usage: Value,
}

#[derive(serde::Serialize)]
struct Item {
    object: &'static str,
    embedding: Vector,
    index: usize,
}

#[derive(serde::Serialize)]
#[serde(untagged)]
enum Vector {
    Float(Vec<f32>),
    Base64(String),
}

pub async fn embeddings(State(s): Shared, body: Body) -> Result<Response, ApiError> {
    let inner = async {
        let v = parse_body(body)?;
        let base64 = match v.get("encoding_format") {
            None | Some(Value::Null) => false,
            Some(Value::String(f)) if f == "float" => false,
            Some(Value::String(f)) if f == "base64" => true,
            Some(_) => {
                return Err(ApiError::field(
                    "encoding_format",
                    "use \"float\" or \"base64\"",
                ))
            }
        };
        if !matches!(v.get("dimensions"), None | Some(Value::Null)) {
            return Err(ApiError::field(
                "dimensions",
                "not supported: the model's size is fixed",
            ));
        }
        let seqs = match token_arrays(v.get("input"), s.max_client_batch_size)? {
            Some(seqs) => seqs,
            None => {
                let texts = string_list(v.get("input"), "input", s.max_client_batch_size)?;
                tokenize_texts(
                    &s,
                    texts,
                    s.auto_truncate,
                    Truncation::LongestFirst,
                    "input",
                )
                .await?
            }
        };
        let tokens: usize = seqs.iter().map(|q| q.input_ids.len()).sum();
        let mut opts = s.embed_defaults.clone();
        opts.normalize = true;
        let (embeddings, work) = embed_seqs(&s, seqs, &opts).await?;
        let data: Vec<Item> = vectors(embeddings)?
            .into_iter()
            .enumerate()
            .map(|(index, e)| Item {
                object: "embedding",
                embedding: if base64 {
                    let bytes: Vec<u8> = e.iter().flat_map(|x| x.to_le_bytes()).collect();
                    Vector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
                } else {
                    Vector::Float(e)
                },
                index,
            })
            .collect();
        let model = v
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(&s.model_id);
        let list = List {
            object: "list",
            data,
            model: model.to_string(),
            usage: json!({"prompt_tokens": tokens, "total_tokens": tokens}),
        };
        Ok(with_work(Json(list), work))
    };
    inner.await.map_err(ApiError::openai)
}

/// `input` given as token ids (one array of ints, or a list of them): used
/// as the whole sequence, special tokens included, and checked against the
/// vocabulary by the batcher. None when `input` is text.
fn token_arrays(v: Option<&Value>, max: usize) -> Result<Option<Vec<SequenceIds>>, ApiError> {
    let Some(Value::Array(a)) = v else {
        return Ok(None);
    };
    let ids = |x: &Value, f: &str| -> Result<Vec<u32>, ApiError> {
        let arr = x
            .as_array()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| ApiError::field(f, "must be a non-empty array of token ids"))?;
        arr.iter()
            .map(|t| {
                t.as_u64()
                    .and_then(|t| u32::try_from(t).ok())
                    .ok_or_else(|| ApiError::field(f, "token ids must be non-negative integers"))
            })
            .collect()
    };
    let seq = |input_ids| SequenceIds {
        input_ids,
        token_type_ids: vec![],
    };
    match a.first() {
        Some(Value::Number(_)) => Ok(Some(vec![seq(ids(v.unwrap_or(&Value::Null), "input")?)])),
        Some(Value::Array(_)) => {
            too_many("input", a.len(), max)?;
            let seqs = a
                .iter()
                .enumerate()
                .map(|(i, x)| ids(x, &format!("input[{i}]")).map(seq))
                .collect::<Result<_, _>>()?;
            Ok(Some(seqs))
        }
        _ => Ok(None),
    }
}

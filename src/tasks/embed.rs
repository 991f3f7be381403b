//! Sentence embeddings: pooling over the last hidden states, optional L2
//! normalisation, with defaults read from a sentence-transformers folder so
//! the result equals `SentenceTransformer(folder).encode`.

use crate::batch::Batch;
use crate::config::ModelConfig;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::output::{embeddings_of, ForwardOutput, Want};
use crate::tokenize::Truncation;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The first token's hidden state.
    Cls,
    /// Mean over the sequence's tokens (special tokens included, as
    /// sentence-transformers does).
    Mean,
    /// The model's tanh pooler output.
    Pooler,
    /// Every token's hidden state.
    None,
}

impl std::str::FromStr for Pooling {
    type Err = Error;
    fn from_str(s: &str) -> Result<Pooling> {
        Ok(match s {
            "cls" => Pooling::Cls,
            "mean" => Pooling::Mean,
            "pooler" => Pooling::Pooler,
            "none" => Pooling::None,
            _ => {
                return Err(Error::Input(format!(
                    "pooling '{s}': use cls, mean, pooler or none"
                )))
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct EmbedOptions {
    pub pooling: Pooling,
    pub normalize: bool,
    /// Token limit per input (special tokens included).
    pub max_seq_length: Option<usize>,
    pub truncation: Truncation,
}

/// One input's embedding: a vector, or per-token vectors for `Pooling::None`.
#[derive(Debug, Clone, PartialEq)]
pub enum Embedding {
    Vector(Vec<f32>),
    Tokens(Vec<Vec<f32>>),
}

impl EmbedOptions {
    /// The folder's sentence-transformers settings (modules.json,
    /// 1_Pooling/config.json, sentence_bert_config.json), or CLS pooling
    /// without normalisation for a plain HF model.
    pub fn from_model_dir(dir: &Path) -> Result<EmbedOptions> {
        let mut o = EmbedOptions {
            pooling: Pooling::Cls,
            normalize: false,
            max_seq_length: None,
            truncation: Truncation::LongestFirst,
        };
        let modules_path = dir.join("modules.json");
        let Ok(text) = std::fs::read_to_string(&modules_path) else {
            return Ok(o);
        };
        let modules: Value = serde_json::from_str(&text)
            .map_err(|e| Error::config(&modules_path, format!("not valid JSON: {e}")))?;
        for m in modules.as_array().into_iter().flatten() {
            let ty = m.get("type").and_then(Value::as_str).unwrap_or("");
            let sub = dir.join(m.get("path").and_then(Value::as_str).unwrap_or(""));
            if ty.ends_with(".Pooling") {
                o.pooling = pooling_from_config(&sub.join("config.json"))?;
            } else if ty.ends_with(".Normalize") {
                o.normalize = true;
            }
        }
        let sb = dir.join("sentence_bert_config.json");
        if let Ok(text) = std::fs::read_to_string(&sb) {
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| Error::config(&sb, format!("not valid JSON: {e}")))?;
            o.max_seq_length = v
                .get("max_seq_length")
                .and_then(Value::as_u64)
                .map(|n| n as usize);
        }
        Ok(o)
    }
}

/// A sentence-transformers folder's prompts, which it puts before the text
/// for `prompt_name`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prompts {
    /// `prompts` in config_sentence_transformers.json, by name.
    pub by_name: BTreeMap<String, String>,
    /// The Pooling module's `include_prompt` (default true); when false
    /// sentence-transformers leaves the prompt's tokens out of the pooling.
    pub pooled: bool,
}

/// The folder's [`Prompts`]; none when it has no
/// config_sentence_transformers.json.
pub fn prompts_from_model_dir(dir: &Path) -> Result<Prompts> {
    let mut prompts = Prompts {
        by_name: BTreeMap::new(),
        pooled: true,
    };
    if let Some(pooling) = pooling_config_path(dir)? {
        prompts.pooled = read_json(&pooling)?
            .get("include_prompt")
            .and_then(Value::as_bool)
            .unwrap_or(true);
    }
    let path = dir.join("config_sentence_transformers.json");
    if !path.is_file() {
        return Ok(prompts);
    }
    prompts.by_name = match read_json(&path)?.get("prompts") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(name, p)| match p.as_str() {
                Some(p) => Ok((name.clone(), p.to_string())),
                None => Err(Error::config(
                    &path,
                    format!("prompts.{name} is not a string"),
                )),
            })
            .collect::<Result<_>>()?,
        Some(_) => return Err(Error::config(&path, "`prompts` is not an object")),
    };
    Ok(prompts)
}

/// The Pooling module's config.json named by modules.json, if any.
fn pooling_config_path(dir: &Path) -> Result<Option<std::path::PathBuf>> {
    let modules_path = dir.join("modules.json");
    if !modules_path.is_file() {
        return Ok(None);
    }
    let modules = read_json(&modules_path)?;
    let pooling = modules.as_array().into_iter().flatten().find(|m| {
        m.get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.ends_with(".Pooling"))
    });
    Ok(pooling.map(|m| {
        dir.join(m.get("path").and_then(Value::as_str).unwrap_or(""))
            .join("config.json")
    }))
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::config(path, format!("not valid JSON: {e}")))
}

fn pooling_from_config(path: &Path) -> Result<Pooling> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| Error::config(path, format!("not valid JSON: {e}")))?;
    let on = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
    if let Some(mode) = v.get("pooling_mode").and_then(Value::as_str) {
        return mode.parse();
    }
    if on("pooling_mode_mean_tokens") {
        Ok(Pooling::Mean)
    } else if on("pooling_mode_cls_token") {
        Ok(Pooling::Cls)
    } else {
        Err(Error::config(
            path,
            "only mean or cls pooling is supported (max / mean_sqrt_len / weighted are not)",
        ))
    }
}

/// Embeddings plus what was cut to fit: `(input index, tokens removed)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedded {
    pub embeddings: Vec<Embedding>,
    pub truncated: Vec<(usize, usize)>,
}

/// Embeds many texts in one batch.
pub fn embed(engine: &Engine, texts: &[&str], opts: &EmbedOptions) -> Result<Vec<Embedding>> {
    embed_reporting(engine, texts, opts).map(|e| e.embeddings)
}

/// [`embed`], also saying which inputs were truncated.
pub fn embed_reporting(engine: &Engine, texts: &[&str], opts: &EmbedOptions) -> Result<Embedded> {
    for (i, t) in texts.iter().enumerate() {
        if t.trim().is_empty() {
            return Err(Error::Input(format!("input {i} is empty")));
        }
    }
    if texts.is_empty() {
        return Ok(Embedded {
            embeddings: Vec::new(),
            truncated: Vec::new(),
        });
    }
    let inputs: Vec<(&str, Option<&str>)> = texts.iter().map(|t| (*t, None)).collect();
    let (encs, batch) = engine.encode_batch(&inputs, opts.max_seq_length, opts.truncation)?;
    let truncated = encs
        .iter()
        .enumerate()
        .filter(|(_, e)| e.truncated_tokens > 0)
        .map(|(i, e)| (i, e.truncated_tokens))
        .collect();
    let rows = engine
        .forward_want(&batch, &opts.want())?
        .into_embeddings()?;
    Ok(Embedded {
        embeddings: split_embeddings(&engine.config, &batch, rows, opts)?,
        truncated,
    })
}

impl EmbedOptions {
    /// What a forward must return for these embeddings: `[seqs, H]` pooled
    /// (per token for [`Pooling::None`]) and normalized where asked.
    pub fn want(&self) -> Want {
        Want::Embeddings {
            pooling: self.pooling,
            normalize: self.normalize,
        }
    }
}

/// Pools (and normalises) a full forward's output into one embedding per
/// sequence of `batch`, on the host.
pub fn pool_embeddings(
    config: &ModelConfig,
    batch: &Batch,
    out: &ForwardOutput,
    opts: &EmbedOptions,
) -> Result<Vec<Embedding>> {
    let rows = embeddings_of(out, batch, opts.pooling, opts.normalize)?;
    split_embeddings(config, batch, rows, opts)
}

/// The rows of a [`Want::Embeddings`] forward (`[seqs, H]`, or `[tokens, H]`
/// for [`Pooling::None`]) as one embedding per sequence of `batch`; the
/// dynamic batcher's callers use it on each request's share.
pub fn split_embeddings(
    config: &ModelConfig,
    batch: &Batch,
    rows: Vec<f32>,
    opts: &EmbedOptions,
) -> Result<Vec<Embedding>> {
    let h = config.hidden_size;
    let n = match opts.pooling {
        Pooling::None => batch.num_tokens(),
        _ => batch.num_seqs(),
    };
    if rows.len() != n * h {
        return Err(Error::Internal(format!(
            "the forward gave {} values for {n} embeddings of width {h}",
            rows.len()
        )));
    }
    let row = |r: usize| rows[r * h..(r + 1) * h].to_vec();
    Ok((0..batch.num_seqs())
        .map(|s| match opts.pooling {
            Pooling::None => Embedding::Tokens(batch.seq_range(s).map(row).collect()),
            _ => Embedding::Vector(row(s)),
        })
        .collect())
}

//! `--model` resolution: a local folder, or a hub id looked up in the
//! standard HF cache (`HF_HUB_CACHE`, `HF_HOME/hub`, `~/.cache/huggingface/hub`),
//! the same layout Python's huggingface_hub writes, so models downloaded by
//! transformers are found offline.
//!
//! A hub id not in the cache is downloaded with `hf-hub` into that same
//! cache (only the files bertrt reads), unless `HF_HUB_OFFLINE=1`; without a
//! network the error says where it looked.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The hub cache folder in force, from the environment.
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HF_HUB_CACHE") {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("HF_HOME") {
        return Some(PathBuf::from(p).join("hub"));
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(p).join("huggingface").join("hub"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/hub"))
}

/// Looks like `name` or `org/name` (and is not an existing path).
fn is_hub_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    !s.is_empty()
        && parts.len() <= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p != &"."
                && p != &".."
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
}

/// Resolves a model argument (a folder, or a hub id) to a folder holding config.json.
pub fn resolve_model(model: &str) -> Result<PathBuf> {
    let p = Path::new(model);
    if p.is_dir() {
        return Ok(p.to_path_buf());
    }
    if p.exists() {
        return Err(Error::Input(format!(
            "model '{model}': is a file; give the model folder that holds config.json"
        )));
    }
    if !is_hub_id(model) {
        return Err(Error::Input(format!("model '{model}': no such folder")));
    }
    let Some(cache) = cache_dir() else {
        return Err(Error::Input(format!(
            "model '{model}': not a folder, and no HF cache location (set HF_HOME or HOME)"
        )));
    };
    let repo = cache.join(format!("models--{}", model.replace('/', "--")));
    let snapshots = repo.join("snapshots");
    // refs/main names the snapshot; otherwise take the only/newest one.
    let from_ref = std::fs::read_to_string(repo.join("refs/main"))
        .ok()
        .map(|r| snapshots.join(r.trim()))
        .filter(|d| d.join("config.json").is_file());
    if let Some(d) = from_ref {
        return Ok(d);
    }
    let mut cands: Vec<PathBuf> = std::fs::read_dir(&snapshots)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|d| d.join("config.json").is_file())
        .collect();
    cands.sort_by_key(|d| std::fs::metadata(d).and_then(|m| m.modified()).ok());
    if let Some(d) = cands.pop() {
        return Ok(d);
    }
    if std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        return Err(Error::Input(format!(
            "model '{model}': not a local folder and not in the HF cache (looked in {}); \
             HF_HUB_OFFLINE=1, so it was not downloaded",
            snapshots.display()
        )));
    }
    download(model, &cache).map_err(|e| {
        Error::Input(format!(
            "model '{model}': not a local folder and not in the HF cache (looked in {}), \
             and downloading it failed: {e}",
            snapshots.display()
        ))
    })
}

/// Files bertrt may read from a model repository.
const WANTED: &[&str] = &[
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
];

/// Downloads config, tokenizer and weights of `model` into the cache; returns
/// the snapshot folder.
fn download(model: &str, cache: &Path) -> std::result::Result<PathBuf, String> {
    let mut builder =
        hf_hub::api::sync::ApiBuilder::from_cache(hf_hub::Cache::new(cache.to_path_buf()))
            .with_progress(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if let Ok(endpoint) = std::env::var("HF_ENDPOINT") {
        builder = builder.with_endpoint(endpoint);
    }
    let api = builder.build().map_err(|e| e.to_string())?;
    let repo = api.model(model.to_string());
    let info = repo.info().map_err(|e| e.to_string())?;
    let files: Vec<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).collect();
    let mut get: Vec<String> = WANTED
        .iter()
        .filter(|f| files.contains(f))
        .map(|f| f.to_string())
        .collect();
    if files.contains(&"model.safetensors") {
        get.push("model.safetensors".into());
    } else if files.contains(&"model.safetensors.index.json") {
        get.push("model.safetensors.index.json".into());
        get.extend(
            files
                .iter()
                .filter(|f| f.starts_with("model-") && f.ends_with(".safetensors"))
                .map(|f| f.to_string()),
        );
    } else if files.contains(&"pytorch_model.bin") {
        get.push("pytorch_model.bin".into());
    } else if files.contains(&"pytorch_model.bin.index.json") {
        get.push("pytorch_model.bin.index.json".into());
        get.extend(
            files
                .iter()
                .filter(|f| f.starts_with("pytorch_model-") && f.ends_with(".bin"))
                .map(|f| f.to_string()),
        );
    } else if let Some((_, advice)) =
        crate::weights::foreign_weights_advice(|f| files.contains(&f), "AutoModel", model, "FOLDER")
    {
        return Err(format!(
            "{model} has {advice}, then pass FOLDER as --model (use the task class from \
             config.json's architectures instead of AutoModel to keep the model's head)"
        ));
    } else {
        return Err(format!(
            "{model} has no model.safetensors, pytorch_model.bin, or shards of either"
        ));
    }
    let mut config = None;
    for f in &get {
        let p = repo.get(f).map_err(|e| format!("{f}: {e}"))?;
        if f == "config.json" {
            config = Some(p);
        }
    }
    config
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .ok_or_else(|| format!("{model} has no config.json"))
}

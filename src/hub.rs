//! `--model` resolution: a local folder, or a hub id looked up in the
//! standard HF cache (`HF_HUB_CACHE`, `HF_HOME/hub`, `~/.cache/huggingface/hub`),
//! the same layout Python's huggingface_hub writes, so models downloaded by
//! transformers are found offline.
//!
//! bertrt does not download: a hub id that is not cached is an error that
//! names every place it looked.

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

/// Resolves `--model` to a folder holding config.json.
pub fn resolve_model(model: &str) -> Result<PathBuf> {
    let p = Path::new(model);
    if p.is_dir() {
        return Ok(p.to_path_buf());
    }
    if p.exists() {
        return Err(Error::Input(format!(
            "--model {model}: is a file; give the model folder that holds config.json"
        )));
    }
    if !is_hub_id(model) {
        return Err(Error::Input(format!("--model {model}: no such folder")));
    }
    let Some(cache) = cache_dir() else {
        return Err(Error::Input(format!(
            "--model {model}: not a folder, and no HF cache location (set HF_HOME or HOME)"
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
    cands.pop().ok_or_else(|| {
        Error::Input(format!(
            "--model {model}: not a local folder and not in the HF cache (looked in {}); \
             bertrt does not download: fetch it with huggingface_hub/transformers first, or pass a folder",
            snapshots.display()
        ))
    })
}

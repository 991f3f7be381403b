//! The model's files as a [`WeightSource`]: every tensor read from the
//! [`WeightStore`] with its shape checked against the config, naming the
//! tensor on any mismatch.

use super::build::{build_weights_with, LinearHook, WeightSource};
use super::*;
use crate::error::{Error, Result};
use crate::weights::{DType, WeightStore};
use std::path::{Path, PathBuf};

struct FileSource<'a> {
    store: &'a WeightStore,
}

impl FileSource<'_> {
    /// The first of `names` present, or an error naming all of them.
    fn first_present<'n>(&self, names: &'n [String], shape: &[usize]) -> Result<&'n str> {
        self.store.find(names).ok_or_else(|| {
            let also = if names.len() > 1 {
                format!(" (nor {})", names[1..].join(", "))
            } else {
                String::new()
            };
            Error::tensor(
                &names[0],
                format!(
                    "missing from {}{also} (expected shape {shape:?})",
                    self.store.source.display()
                ),
            )
        })
    }
}

impl WeightSource for FileSource<'_> {
    fn matrix(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.store.get(name, shape)
    }

    fn bias(&mut self, names: &[String], len: usize) -> Result<Vec<f32>> {
        let name = self.first_present(names, &[len])?;
        self.store.get(name, &[len])
    }

    fn layer_norm(
        &mut self,
        gamma: &[String; 2],
        beta: &[String; 2],
        dim: usize,
    ) -> Result<LayerNorm> {
        Ok(LayerNorm {
            gamma: self.bias(gamma, dim)?,
            beta: self.bias(beta, dim)?,
        })
    }

    fn has(&self, weight_name: &str, _hf_builds_it: bool) -> bool {
        // What the files hold decides: a BertModel saved with
        // add_pooling_layer=False has no pooler, and that is fine.
        self.store.contains(weight_name)
    }

    fn names(&self) -> Vec<String> {
        self.store.names().cloned().collect()
    }

    fn skip(&mut self, name: &str) {
        self.store.skip(name);
    }

    fn unused(&self) -> Vec<String> {
        self.store.unused()
    }

    fn describe(&self) -> String {
        self.store.source.display().to_string()
    }
}

/// Reads every tensor the architecture in `cfg` needs from `store`.
pub fn load_weights(cfg: &ModelConfig, store: &WeightStore) -> Result<ModelWeights> {
    build_weights_with(cfg, &mut FileSource { store }, &mut |_, _| {})
}

/// What a folder's weight files were, for `info` and warnings.
#[derive(Debug, Clone)]
pub struct WeightFiles {
    /// The file (or shard index) the weights came from.
    pub source: PathBuf,
    /// The format(s) read, e.g. "safetensors".
    pub format: String,
    /// How many files (shards) were read.
    pub files: usize,
    /// The dtype most weights are stored in: f32, f16 or bf16.
    pub dtype: &'static str,
}

/// A model folder's config.json and weights, read and checked: the one path
/// from a folder to [`ModelWeights`] (the engine, the bench and the tests).
pub fn read_dir(dir: &Path) -> Result<(ModelWeights, WeightFiles)> {
    read_dir_with(dir, &mut |_, _| {})
}

/// [`read_dir`], handing each encoder linear to `hook` as it is read.
pub fn read_dir_with(dir: &Path, hook: LinearHook) -> Result<(ModelWeights, WeightFiles)> {
    let config_path = dir.join("config.json");
    if !config_path.is_file() {
        return Err(Error::config(
            &config_path,
            "missing (is this a HF model folder?)",
        ));
    }
    let config = ModelConfig::from_file(&config_path)?;
    let store = WeightStore::open_dir(dir)?;
    let weights = build_weights_with(&config, &mut FileSource { store: &store }, hook)?;
    let files = WeightFiles {
        source: store.source.clone(),
        format: store.format_description(),
        files: store.files.len(),
        dtype: match store.main_dtype() {
            Some(DType::F16) => "f16",
            Some(DType::BF16) => "bf16",
            _ => "f32",
        },
    };
    Ok((weights, files))
}

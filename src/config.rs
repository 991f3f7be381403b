//! config.json -> a typed [`ModelConfig`], dispatched on `model_type` and
//! `architectures`. Everything the forward pass reads is validated here once.

use crate::error::{Error, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Bert,
    Albert,
    Roberta,
    XlmRoberta,
    Electra,
}

/// config.json spellings <-> our enums, each written once: parsing, error
/// messages and `bertrt info` all read these tables.
const FAMILIES: &[(&str, Family)] = &[
    ("bert", Family::Bert),
    ("albert", Family::Albert),
    ("roberta", Family::Roberta),
    ("xlm-roberta", Family::XlmRoberta),
    ("electra", Family::Electra),
];
const ACTIVATIONS: &[(&str, Activation)] = &[
    ("gelu", Activation::Gelu),
    ("gelu_new", Activation::GeluTanh),
    ("gelu_pytorch_tanh", Activation::GeluTanh),
    ("gelu_fast", Activation::GeluFast),
    ("relu", Activation::Relu),
    ("tanh", Activation::Tanh),
];
const SHARINGS: &[(&str, Sharing)] = &[
    ("all", Sharing::All),
    ("attention", Sharing::Attention),
    ("ffn", Sharing::Ffn),
    ("none", Sharing::None),
];

fn lookup<T: Copy>(table: &[(&'static str, T)], s: &str) -> Option<(&'static str, T)> {
    table.iter().find(|(n, _)| *n == s).copied()
}
fn name_of<T: Copy + PartialEq>(table: &[(&'static str, T)], v: T) -> &'static str {
    table.iter().find(|(_, t)| *t == v).map_or("?", |(n, _)| n)
}
fn names(table: &[(&'static str, impl Copy)]) -> String {
    table.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

impl Family {
    pub fn from_model_type(s: &str) -> Option<Family> {
        lookup(FAMILIES, s).map(|(_, f)| f)
    }

    /// `model_type` as config.json spells it.
    pub fn model_type(self) -> &'static str {
        name_of(FAMILIES, self)
    }

    /// The weight-name prefix of the base model inside task models.
    pub fn prefix(self) -> &'static str {
        match self {
            Family::Bert => "bert",
            Family::Albert => "albert",
            Family::Roberta | Family::XlmRoberta => "roberta",
            Family::Electra => "electra",
        }
    }

    /// RoBERTa-style positions: start at pad_token_id + 1.
    pub fn offset_positions(self) -> bool {
        matches!(self, Family::Roberta | Family::XlmRoberta)
    }

    fn class_prefix(self) -> &'static str {
        match self {
            Family::Bert => "Bert",
            Family::Albert => "Albert",
            Family::Roberta => "Roberta",
            Family::XlmRoberta => "XLMRoberta",
            Family::Electra => "Electra",
        }
    }
}

/// What sits on top of the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// `*Model`: hidden states (+ pooler where the family has one).
    Base,
    MaskedLm,
    QuestionAnswering,
    SequenceClassification,
    TokenClassification,
    /// ElectraForPreTraining: replaced-token detection.
    Discriminator,
    /// AlbertForPreTraining: MLM + sentence-order prediction.
    AlbertPreTraining,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// erf form
    Gelu,
    /// tanh form (gelu_new, gelu_pytorch_tanh)
    GeluTanh,
    GeluFast,
    Relu,
    Tanh,
}

impl Activation {
    pub fn from_hf(s: &str) -> Option<Activation> {
        lookup(ACTIVATIONS, s).map(|(_, a)| a)
    }
}

/// Which parts of an ALBERT layer are shared across layers (the ALBERT paper's
/// ablation). `All` is HF's layout; for the others layer i reads its unshared
/// parts from group i and its shared parts from group 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    All,
    Attention,
    Ffn,
    None,
}

impl Sharing {
    /// `sharing` as config.json spells it.
    pub fn name(self) -> &'static str {
        name_of(SHARINGS, self)
    }
}

#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub family: Family,
    pub head: Head,
    pub architecture: String,
    pub hidden_size: usize,
    /// Width of the embedding tables (== hidden_size unless factorized).
    pub embedding_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub head_dim: usize,
    pub intermediate_size: usize,
    pub act: Activation,
    /// `hidden_act` as config.json spells it (two names map to GeluTanh).
    pub hidden_act: &'static str,
    pub layer_norm_eps: f32,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub vocab_size: usize,
    pub pad_token_id: u32,
    /// ALBERT only (1 and 1 otherwise).
    pub num_hidden_groups: usize,
    pub inner_group_num: usize,
    pub sharing: Sharing,
    pub id2label: BTreeMap<usize, String>,
    pub num_labels: usize,
    /// regression / single_label_classification / multi_label_classification
    pub problem_type: Option<String>,
}

/// The largest value each size field of config.json may have: far above
/// every released BERT-family model (XLM-R's 250k vocab, ALBERT-xxlarge's
/// 16k FFN), far below what would exhaust memory before a weight is read.
fn size_cap(field: &str) -> Option<usize> {
    Some(match field {
        "hidden_size" | "embedding_size" | "num_attention_heads" => 1 << 16,
        "intermediate_size" => 1 << 18,
        "vocab_size" => 1 << 24,
        "max_position_embeddings" => 1 << 20,
        "type_vocab_size" | "num_labels" => 1 << 16,
        "num_hidden_layers" | "num_hidden_groups" => 1 << 10,
        "inner_group_num" => 1 << 6,
        _ => return None,
    })
}

impl ModelConfig {
    pub fn from_file(path: &Path) -> Result<ModelConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json_str(&text, path)
    }

    pub fn from_json_str(text: &str, path: &Path) -> Result<ModelConfig> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Error::config(path, format!("not valid JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| Error::config(path, "top level is not a JSON object"))?;
        let err = |m: String| Error::config(path, m);
        let get_usize = |k: &str| -> Result<Option<usize>> {
            match obj.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(x) => x.as_u64().map(|n| Some(n as usize)).ok_or_else(|| {
                    err(format!(
                        "field '{k}' must be a non-negative integer, got {x}"
                    ))
                }),
            }
        };
        // Sizes are capped where they are read: buffers and layer tables are
        // sized from them before any weight is checked against them.
        let get_usize = |k: &str| -> Result<Option<usize>> {
            let v = get_usize(k)?;
            match (v, size_cap(k)) {
                (Some(n), Some(max)) if n > max => Err(err(format!(
                    "field '{k}' is {n}, more than the {max} this engine accepts"
                ))),
                _ => Ok(v),
            }
        };
        let need = |k: &str| -> Result<usize> {
            get_usize(k)?.ok_or_else(|| err(format!("missing required field '{k}'")))
        };
        let model_type = obj
            .get("model_type")
            .and_then(Value::as_str)
            .ok_or_else(|| err("missing field 'model_type'".into()))?;
        let family = Family::from_model_type(model_type).ok_or_else(|| {
            Error::Unsupported(format!(
                "model_type '{model_type}' in {} (supported: {})",
                path.display(),
                names(FAMILIES)
            ))
        })?;
        let architecture = match obj.get("architectures") {
            Some(Value::Array(a)) if !a.is_empty() => a[0]
                .as_str()
                .ok_or_else(|| err("'architectures' must list strings".into()))?
                .to_string(),
            _ => format!("{}Model", family.class_prefix()),
        };
        let head = head_for(family, &architecture).ok_or_else(|| {
            Error::Unsupported(format!(
                "architecture '{architecture}' for model_type '{model_type}' (supported: {})",
                supported_architectures(family).join(", ")
            ))
        })?;

        let hidden_size = need("hidden_size")?;
        let num_heads = need("num_attention_heads")?;
        if num_heads == 0 || hidden_size == 0 || hidden_size % num_heads != 0 {
            return Err(err(format!(
                "hidden_size {hidden_size} is not a positive multiple of num_attention_heads {num_heads}"
            )));
        }
        let embedding_size = match family {
            Family::Albert | Family::Electra => get_usize("embedding_size")?.unwrap_or(hidden_size),
            _ => hidden_size,
        };
        let act_name = obj
            .get("hidden_act")
            .and_then(Value::as_str)
            .unwrap_or("gelu");
        let (hidden_act, act) = lookup(ACTIVATIONS, act_name).ok_or_else(|| {
            err(format!(
                "hidden_act '{act_name}' is not supported ({})",
                names(ACTIVATIONS)
            ))
        })?;
        if let Some(p) = obj.get("position_embedding_type").and_then(Value::as_str) {
            if p != "absolute" {
                return Err(err(format!(
                    "position_embedding_type '{p}' is not supported (only 'absolute')"
                )));
            }
        }
        let layer_norm_eps = match obj.get("layer_norm_eps") {
            None => 1e-12,
            Some(x) => x
                .as_f64()
                .ok_or_else(|| err(format!("layer_norm_eps must be a number, got {x}")))?
                as f32,
        };
        let num_layers = need("num_hidden_layers")?;
        let (num_hidden_groups, inner_group_num) = if family == Family::Albert {
            let g = get_usize("num_hidden_groups")?.unwrap_or(1);
            let i = get_usize("inner_group_num")?.unwrap_or(1);
            if g == 0 || i == 0 || g > num_layers.max(1) || num_layers % g != 0 {
                return Err(err(format!(
                    "num_hidden_layers {num_layers} must be a multiple of num_hidden_groups {g} (and inner_group_num {i} >= 1)"
                )));
            }
            (g, i)
        } else {
            (1, 1)
        };
        let sharing = match obj.get("sharing").and_then(Value::as_str) {
            None => Sharing::All,
            Some(s) => lookup(SHARINGS, s)
                .map(|(_, v)| v)
                .ok_or_else(|| err(format!("sharing '{s}' is not one of {}", names(SHARINGS))))?,
        };
        if sharing != Sharing::All && (family != Family::Albert || num_hidden_groups != num_layers)
        {
            return Err(err(format!(
                "sharing '{}' needs an ALBERT model with num_hidden_groups == num_hidden_layers (one group per layer)",
                sharing.name()
            )));
        }
        let mut id2label = BTreeMap::new();
        if let Some(Value::Object(m)) = obj.get("id2label") {
            for (k, v) in m {
                let id: usize = k
                    .parse()
                    .map_err(|_| err(format!("id2label key '{k}' is not an integer")))?;
                id2label.insert(id, v.as_str().unwrap_or_default().to_string());
            }
        }
        let num_labels = get_usize("num_labels")?.unwrap_or(if id2label.is_empty() {
            2
        } else {
            id2label.len()
        });
        Ok(ModelConfig {
            family,
            head,
            architecture,
            hidden_size,
            embedding_size,
            num_layers,
            num_heads,
            head_dim: hidden_size / num_heads,
            intermediate_size: need("intermediate_size")?,
            act,
            hidden_act,
            layer_norm_eps,
            max_position_embeddings: need("max_position_embeddings")?,
            type_vocab_size: get_usize("type_vocab_size")?.unwrap_or(2),
            vocab_size: need("vocab_size")?,
            pad_token_id: get_usize("pad_token_id")?.unwrap_or(0) as u32,
            num_hidden_groups,
            inner_group_num,
            sharing,
            id2label,
            num_labels,
            problem_type: obj
                .get("problem_type")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }

    /// The longest sequence (special tokens included) the position table allows.
    pub fn max_tokens_per_sequence(&self) -> usize {
        if self.family.offset_positions() {
            self.max_position_embeddings
                .saturating_sub(self.pad_token_id as usize + 1)
        } else {
            self.max_position_embeddings
        }
    }

    pub fn label(&self, id: usize) -> String {
        self.id2label
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("LABEL_{id}"))
    }
}

fn head_for(family: Family, arch: &str) -> Option<Head> {
    let rest = arch.strip_prefix(family.class_prefix())?;
    Some(match (family, rest) {
        (_, "Model") => Head::Base,
        (_, "ForMaskedLM") => Head::MaskedLm,
        (_, "ForQuestionAnswering") => Head::QuestionAnswering,
        (_, "ForSequenceClassification") => Head::SequenceClassification,
        (_, "ForTokenClassification") => Head::TokenClassification,
        (Family::Electra, "ForPreTraining") => Head::Discriminator,
        (Family::Albert, "ForPreTraining") => Head::AlbertPreTraining,
        _ => return None,
    })
}

fn supported_architectures(family: Family) -> Vec<String> {
    let p = family.class_prefix();
    let mut v: Vec<String> = [
        "Model",
        "ForMaskedLM",
        "ForQuestionAnswering",
        "ForSequenceClassification",
        "ForTokenClassification",
    ]
    .iter()
    .map(|s| format!("{p}{s}"))
    .collect();
    if matches!(family, Family::Electra | Family::Albert) {
        v.push(format!("{p}ForPreTraining"));
    }
    v
}

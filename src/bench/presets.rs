//! The published configs of the models the benchmarks run, as config.json
//! text (the fields that matter, copied from the HF hub repositories named in
//! each entry). A preset runs with random weights ([`crate::model::random_weights`]):
//! timing does not depend on the values.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use std::path::Path;

pub struct Preset {
    /// What `--model` takes.
    pub name: &'static str,
    /// The hub repository the config comes from.
    pub hub_id: &'static str,
    pub config_json: &'static str,
}

pub const PRESETS: &[Preset] = &[
    Preset {
        name: "bert-base",
        hub_id: "google-bert/bert-base-uncased",
        config_json: r#"{
  "architectures": ["BertForMaskedLM"],
  "attention_probs_dropout_prob": 0.1,
  "hidden_act": "gelu",
  "hidden_dropout_prob": 0.1,
  "hidden_size": 768,
  "initializer_range": 0.02,
  "intermediate_size": 3072,
  "layer_norm_eps": 1e-12,
  "max_position_embeddings": 512,
  "model_type": "bert",
  "num_attention_heads": 12,
  "num_hidden_layers": 12,
  "pad_token_id": 0,
  "position_embedding_type": "absolute",
  "type_vocab_size": 2,
  "vocab_size": 30522
}"#,
    },
    Preset {
        name: "bert-large",
        hub_id: "google-bert/bert-large-uncased",
        config_json: r#"{
  "architectures": ["BertForMaskedLM"],
  "attention_probs_dropout_prob": 0.1,
  "hidden_act": "gelu",
  "hidden_dropout_prob": 0.1,
  "hidden_size": 1024,
  "initializer_range": 0.02,
  "intermediate_size": 4096,
  "layer_norm_eps": 1e-12,
  "max_position_embeddings": 512,
  "model_type": "bert",
  "num_attention_heads": 16,
  "num_hidden_layers": 24,
  "pad_token_id": 0,
  "position_embedding_type": "absolute",
  "type_vocab_size": 2,
  "vocab_size": 30522
}"#,
    },
    Preset {
        name: "albert-base-v2",
        hub_id: "albert/albert-base-v2",
        config_json: r#"{
  "architectures": ["AlbertForMaskedLM"],
  "attention_probs_dropout_prob": 0,
  "bos_token_id": 2,
  "classifier_dropout_prob": 0.1,
  "down_scale_factor": 1,
  "embedding_size": 128,
  "eos_token_id": 3,
  "gap_size": 0,
  "hidden_act": "gelu_new",
  "hidden_dropout_prob": 0,
  "hidden_size": 768,
  "initializer_range": 0.02,
  "inner_group_num": 1,
  "intermediate_size": 3072,
  "layer_norm_eps": 1e-12,
  "max_position_embeddings": 512,
  "model_type": "albert",
  "net_structure_type": 0,
  "num_attention_heads": 12,
  "num_hidden_groups": 1,
  "num_hidden_layers": 12,
  "num_memory_blocks": 0,
  "pad_token_id": 0,
  "type_vocab_size": 2,
  "vocab_size": 30000
}"#,
    },
    Preset {
        name: "albert-large-v2",
        hub_id: "albert/albert-large-v2",
        config_json: r#"{
  "architectures": ["AlbertForMaskedLM"],
  "attention_probs_dropout_prob": 0,
  "bos_token_id": 2,
  "classifier_dropout_prob": 0.1,
  "down_scale_factor": 1,
  "embedding_size": 128,
  "eos_token_id": 3,
  "gap_size": 0,
  "hidden_act": "gelu_new",
  "hidden_dropout_prob": 0,
  "hidden_size": 1024,
  "initializer_range": 0.02,
  "inner_group_num": 1,
  "intermediate_size": 4096,
  "layer_norm_eps": 1e-12,
  "max_position_embeddings": 512,
  "model_type": "albert",
  "net_structure_type": 0,
  "num_attention_heads": 16,
  "num_hidden_groups": 1,
  "num_hidden_layers": 24,
  "num_memory_blocks": 0,
  "pad_token_id": 0,
  "type_vocab_size": 2,
  "vocab_size": 30000
}"#,
    },
    Preset {
        name: "roberta-base",
        hub_id: "FacebookAI/roberta-base",
        config_json: r#"{
  "architectures": ["RobertaForMaskedLM"],
  "attention_probs_dropout_prob": 0.1,
  "bos_token_id": 0,
  "eos_token_id": 2,
  "hidden_act": "gelu",
  "hidden_dropout_prob": 0.1,
  "hidden_size": 768,
  "initializer_range": 0.02,
  "intermediate_size": 3072,
  "layer_norm_eps": 1e-05,
  "max_position_embeddings": 514,
  "model_type": "roberta",
  "num_attention_heads": 12,
  "num_hidden_layers": 12,
  "pad_token_id": 1,
  "type_vocab_size": 1,
  "vocab_size": 50265
}"#,
    },
    Preset {
        name: "electra-small",
        hub_id: "google/electra-small-discriminator",
        config_json: r#"{
  "architectures": ["ElectraForPreTraining"],
  "attention_probs_dropout_prob": 0.1,
  "embedding_size": 128,
  "hidden_act": "gelu",
  "hidden_dropout_prob": 0.1,
  "hidden_size": 256,
  "initializer_range": 0.02,
  "intermediate_size": 1024,
  "layer_norm_eps": 1e-12,
  "max_position_embeddings": 512,
  "model_type": "electra",
  "num_attention_heads": 4,
  "num_hidden_layers": 12,
  "pad_token_id": 0,
  "type_vocab_size": 2,
  "vocab_size": 30522
}"#,
    },
    Preset {
        name: "electra-base",
        hub_id: "google/electra-base-discriminator",
        config_json: r#"{
  "architectures": ["ElectraForPreTraining"],
  "attention_probs_dropout_prob": 0.1,
  "embedding_size": 768,
  "hidden_act": "gelu",
  "hidden_dropout_prob": 0.1,
  "hidden_size": 768,
  "initializer_range": 0.02,
  "intermediate_size": 3072,
  "layer_norm_eps": 1e-12,
  "max_position_embeddings": 512,
  "model_type": "electra",
  "num_attention_heads": 12,
  "num_hidden_layers": 12,
  "pad_token_id": 0,
  "type_vocab_size": 2,
  "vocab_size": 30522
}"#,
    },
    Preset {
        // SpanBERT/spanbert-base-cased fine-tuned on SQuAD 2.0 (e.g.
        // mrm8488/spanbert-base-finetuned-squadv2): bert-base dims, cased vocab.
        name: "spanbert-base",
        hub_id: "SpanBERT/spanbert-base-cased (+ SQuAD 2.0 QA head)",
        config_json: r#"{
  "architectures": ["BertForQuestionAnswering"],
  "attention_probs_dropout_prob": 0.1,
  "hidden_act": "gelu",
  "hidden_dropout_prob": 0.1,
  "hidden_size": 768,
  "initializer_range": 0.02,
  "intermediate_size": 3072,
  "layer_norm_eps": 1e-12,
  "max_position_embeddings": 512,
  "model_type": "bert",
  "num_attention_heads": 12,
  "num_hidden_layers": 12,
  "pad_token_id": 0,
  "type_vocab_size": 2,
  "vocab_size": 28996
}"#,
    },
];

/// Aliases accepted for preset names (hub-style spellings).
const ALIASES: &[(&str, &str)] = &[
    ("bert-base-uncased", "bert-base"),
    ("bert-large-uncased", "bert-large"),
    ("electra-small-discriminator", "electra-small"),
    ("electra-base-discriminator", "electra-base"),
    ("spanbert-base-cased", "spanbert-base"),
    ("spanbert", "spanbert-base"),
];

pub fn find(name: &str) -> Option<&'static Preset> {
    let name = ALIASES
        .iter()
        .find(|(a, _)| *a == name)
        .map_or(name, |(_, n)| n);
    PRESETS.iter().find(|p| p.name == name)
}

pub fn names() -> Vec<&'static str> {
    PRESETS.iter().map(|p| p.name).collect()
}

impl Preset {
    pub fn config(&self) -> Result<ModelConfig> {
        ModelConfig::from_json_str(
            self.config_json,
            Path::new(&format!("preset:{}", self.name)),
        )
    }
}

/// The preset named `name`, or an error listing them.
pub fn preset(name: &str) -> Result<&'static Preset> {
    find(name).ok_or_else(|| {
        Error::Input(format!(
            "no preset '{name}' (presets: {})",
            names().join(", ")
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Family, Head};

    #[test]
    fn every_preset_parses() {
        for p in PRESETS {
            let c = p.config().unwrap_or_else(|e| panic!("{}: {e}", p.name));
            assert!(c.num_layers >= 12, "{}", p.name);
        }
        let s = preset("spanbert-base").unwrap().config().unwrap();
        assert_eq!(
            (s.head, s.vocab_size, s.hidden_size),
            (Head::QuestionAnswering, 28996, 768)
        );
        let a = preset("albert-base-v2").unwrap().config().unwrap();
        assert_eq!((a.family, a.embedding_size), (Family::Albert, 128));
        assert_eq!(
            preset("electra-small-discriminator").unwrap().name,
            "electra-small"
        );
        assert!(preset("gpt2").is_err());
    }
}

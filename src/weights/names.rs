//! Every tensor-name string of the HF checkpoints we read lives here.
//!
//! Names are module prefixes (`bert.encoder.layer.3.attention.self.query`);
//! [`Names::param`] appends `.weight`/`.bias`, and LayerNorm parameters are
//! also found under the old `gamma`/`beta` names.

use crate::config::Family;

/// Where the base model's tensors sit: under `bert.` (task models) or at the
/// top level (bare `BertModel` files).
#[derive(Debug, Clone)]
pub struct Names {
    pub family: Family,
    base: String,
}

/// Module prefixes of one transformer layer (BERT-style or ALBERT-style).
#[derive(Debug, Clone)]
pub struct LayerNames {
    pub query: String,
    pub key: String,
    pub value: String,
    pub attn_out: String,
    pub attn_ln: String,
    pub ffn_in: String,
    pub ffn_out: String,
    pub ffn_ln: String,
}

impl Names {
    /// Chooses the base prefix by looking at the names present.
    pub fn detect<'a>(family: Family, mut present: impl Iterator<Item = &'a String>) -> Names {
        let p = format!("{}.", family.prefix());
        let base = if present.any(|n| n.starts_with(&p)) {
            p
        } else {
            String::new()
        };
        Names { family, base }
    }

    pub fn weight(prefix: &str) -> String {
        format!("{prefix}.weight")
    }
    pub fn bias(prefix: &str) -> String {
        format!("{prefix}.bias")
    }
    /// LayerNorm scale and shift, current then legacy names.
    pub fn ln_params(prefix: &str) -> ([String; 2], [String; 2]) {
        (
            [format!("{prefix}.weight"), format!("{prefix}.gamma")],
            [format!("{prefix}.bias"), format!("{prefix}.beta")],
        )
    }

    fn b(&self, rest: &str) -> String {
        format!("{}{rest}", self.base)
    }

    pub fn word_embeddings(&self) -> String {
        self.b("embeddings.word_embeddings")
    }
    pub fn position_embeddings(&self) -> String {
        self.b("embeddings.position_embeddings")
    }
    pub fn token_type_embeddings(&self) -> String {
        self.b("embeddings.token_type_embeddings")
    }
    pub fn embeddings_ln(&self) -> String {
        self.b("embeddings.LayerNorm")
    }
    /// Integer buffers some files carry; never weights.
    pub fn buffers(&self) -> Vec<String> {
        vec![
            self.b("embeddings.position_ids"),
            self.b("embeddings.token_type_ids"),
        ]
    }
    /// The E -> H projection of factorized embeddings.
    pub fn embeddings_projection(&self) -> String {
        match self.family {
            Family::Albert => self.b("encoder.embedding_hidden_mapping_in"),
            _ => self.b("embeddings_project"),
        }
    }
    pub fn pooler(&self) -> String {
        match self.family {
            Family::Albert => self.b("pooler"),
            _ => self.b("pooler.dense"),
        }
    }

    /// BERT/RoBERTa/ELECTRA layer i.
    pub fn layer(&self, i: usize) -> LayerNames {
        let p = self.b(&format!("encoder.layer.{i}"));
        LayerNames {
            query: format!("{p}.attention.self.query"),
            key: format!("{p}.attention.self.key"),
            value: format!("{p}.attention.self.value"),
            attn_out: format!("{p}.attention.output.dense"),
            attn_ln: format!("{p}.attention.output.LayerNorm"),
            ffn_in: format!("{p}.intermediate.dense"),
            ffn_out: format!("{p}.output.dense"),
            ffn_ln: format!("{p}.output.LayerNorm"),
        }
    }

    /// ALBERT group g, inner layer j.
    pub fn albert_layer(&self, g: usize, j: usize) -> LayerNames {
        let p = self.b(&format!(
            "encoder.albert_layer_groups.{g}.albert_layers.{j}"
        ));
        LayerNames {
            query: format!("{p}.attention.query"),
            key: format!("{p}.attention.key"),
            value: format!("{p}.attention.value"),
            attn_out: format!("{p}.attention.dense"),
            attn_ln: format!("{p}.attention.LayerNorm"),
            ffn_in: format!("{p}.ffn"),
            ffn_out: format!("{p}.ffn_output"),
            ffn_ln: format!("{p}.full_layer_layer_norm"),
        }
    }

    /// MLM head: (transform dense, transform LayerNorm, decoder, decoder bias
    /// candidates). The decoder weight is tied to the word embeddings when absent.
    pub fn mlm_head(&self) -> MlmNames {
        let (dense, ln, decoder, biases) = match self.family {
            Family::Bert => (
                "cls.predictions.transform.dense",
                "cls.predictions.transform.LayerNorm",
                "cls.predictions.decoder",
                ["cls.predictions.bias", "cls.predictions.decoder.bias"],
            ),
            Family::Roberta | Family::XlmRoberta => (
                "lm_head.dense",
                "lm_head.layer_norm",
                "lm_head.decoder",
                ["lm_head.bias", "lm_head.decoder.bias"],
            ),
            Family::Albert => (
                "predictions.dense",
                "predictions.LayerNorm",
                "predictions.decoder",
                ["predictions.bias", "predictions.decoder.bias"],
            ),
            Family::Electra => (
                "generator_predictions.dense",
                "generator_predictions.LayerNorm",
                "generator_lm_head",
                ["generator_lm_head.bias", "generator_lm_head.bias"],
            ),
        };
        MlmNames {
            dense: dense.into(),
            ln: ln.into(),
            decoder: decoder.into(),
            bias_candidates: biases.iter().map(|s| s.to_string()).collect(),
        }
    }

    pub const QA_OUTPUTS: &'static str = "qa_outputs";
    pub const CLASSIFIER: &'static str = "classifier";
    /// RoBERTa/ELECTRA first-token classification head.
    pub const CLASSIFIER_DENSE: &'static str = "classifier.dense";
    pub const CLASSIFIER_OUT_PROJ: &'static str = "classifier.out_proj";
    pub const DISCRIMINATOR_DENSE: &'static str = "discriminator_predictions.dense";
    pub const DISCRIMINATOR_PREDICTION: &'static str = "discriminator_predictions.dense_prediction";
    pub const SOP_CLASSIFIER: &'static str = "sop_classifier.classifier";
}

#[derive(Debug, Clone)]
pub struct MlmNames {
    pub dense: String,
    pub ln: String,
    pub decoder: String,
    pub bias_candidates: Vec<String>,
}

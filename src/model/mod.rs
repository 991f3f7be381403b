//! The model as host f32 weights, laid out for the packed forward pass and
//! independent of the backend: the CPU engine runs it directly, the CUDA
//! backend uploads it once as fp16.
//!
//! Layers are split into attention and FFN blocks and the encoder is a
//! schedule of (attention block, FFN block) pairs, so ALBERT's cross-layer
//! sharing (all, attention-only, FFN-only) is just repeated indices.

mod load;

pub use load::load_weights;

use crate::config::{Activation, ModelConfig};

#[derive(Debug, Clone)]
pub struct Linear {
    /// `[out, in]`, as nn.Linear stores it.
    pub w: Vec<f32>,
    pub b: Vec<f32>,
    pub in_dim: usize,
    pub out_dim: usize,
}

#[derive(Debug, Clone)]
pub struct LayerNorm {
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
}

#[derive(Debug, Clone)]
pub struct Embeddings {
    /// `[vocab, E]`, `[max_pos, E]`, `[type_vocab, E]` (type may be empty).
    pub word: Vec<f32>,
    pub position: Vec<f32>,
    pub token_type: Vec<f32>,
    pub ln: LayerNorm,
    /// E -> H for ALBERT (`embedding_hidden_mapping_in`) and ELECTRA
    /// (`embeddings_project`) when E != H.
    pub project: Option<Linear>,
}

#[derive(Debug, Clone)]
pub struct AttentionBlock {
    /// Q, K and V concatenated at load time: `[3H, H]`.
    pub qkv: Linear,
    pub out: Linear,
    pub ln: LayerNorm,
}

#[derive(Debug, Clone)]
pub struct FfnBlock {
    pub up: Linear,
    pub down: Linear,
    pub ln: LayerNorm,
}

#[derive(Debug, Clone)]
pub struct MlmHead {
    pub transform: Linear,
    pub act: Activation,
    pub ln: LayerNorm,
    /// `[vocab, E_or_H]`, tied to the word embeddings when the file omits it.
    pub decoder: Linear,
}

#[derive(Debug, Clone)]
pub enum ClassifierHead {
    /// BERT/ALBERT: classifier over the tanh pooler output.
    Pooled(Linear),
    /// RoBERTa (tanh) and ELECTRA (gelu): dense + act + out_proj on token 0.
    FirstToken {
        dense: Linear,
        act: Activation,
        out_proj: Linear,
    },
}

#[derive(Debug, Clone)]
pub enum HeadWeights {
    None,
    MaskedLm(MlmHead),
    QuestionAnswering(Linear),
    SequenceClassification(ClassifierHead),
    TokenClassification(Linear),
    Discriminator { dense: Linear, act: Activation, prediction: Linear },
    AlbertPreTraining { mlm: MlmHead, sop: Linear },
}

#[derive(Debug, Clone)]
pub struct ModelWeights {
    pub config: ModelConfig,
    pub embeddings: Embeddings,
    pub attention: Vec<AttentionBlock>,
    pub ffn: Vec<FfnBlock>,
    /// The layers in execution order, as indices into `attention` and `ffn`.
    pub schedule: Vec<(usize, usize)>,
    /// Dense layer of the tanh pooler (BERT, ALBERT, RoBERTa base models).
    pub pooler: Option<Linear>,
    pub head: HeadWeights,
    /// Tensors present in the files but not used by this architecture.
    pub unused_tensors: Vec<String>,
}

impl ModelWeights {
    /// Scalars held in memory once (shared ALBERT blocks counted once).
    pub fn parameter_count(&self) -> usize {
        let lin = |l: &Linear| l.w.len() + l.b.len();
        let ln = |l: &LayerNorm| l.gamma.len() + l.beta.len();
        let e = &self.embeddings;
        let mut n = e.word.len() + e.position.len() + e.token_type.len() + ln(&e.ln);
        n += e.project.as_ref().map_or(0, lin);
        n += self.attention.iter().map(|a| lin(&a.qkv) + lin(&a.out) + ln(&a.ln)).sum::<usize>();
        n += self.ffn.iter().map(|f| lin(&f.up) + lin(&f.down) + ln(&f.ln)).sum::<usize>();
        n += self.pooler.as_ref().map_or(0, lin);
        n
    }
}

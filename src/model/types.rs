//! The model's weights as one family of types, generic over where a tensor
//! lives: host f32 (`Vec<f32>`, what the builder makes and the CPU engine
//! runs) or a device pointer (the fp16 backend). `map` converts a whole
//! model, so the backends never mirror these types.

use crate::config::{Activation, ModelConfig};
use crate::error::Result;

/// Converts one tensor's storage; called once per tensor, in a fixed order.
pub type MapTensor<'a, T, U> = dyn FnMut(&T) -> Result<U> + 'a;

#[derive(Debug, Clone)]
pub struct Linear<T = Vec<f32>> {
    /// `[out, in]`, as nn.Linear stores it.
    pub w: T,
    pub b: T,
    pub in_dim: usize,
    pub out_dim: usize,
}

#[derive(Debug, Clone)]
pub struct LayerNorm<T = Vec<f32>> {
    pub gamma: T,
    pub beta: T,
}

#[derive(Debug, Clone)]
pub struct Embeddings<T = Vec<f32>> {
    /// `[vocab, E]`, `[max_pos, E]`, `[type_vocab, E]` (type may be empty).
    pub word: T,
    pub position: T,
    pub token_type: T,
    pub ln: LayerNorm<T>,
    /// E -> H for ALBERT (`embedding_hidden_mapping_in`) and ELECTRA
    /// (`embeddings_project`) when E != H.
    pub project: Option<Linear<T>>,
}

#[derive(Debug, Clone)]
pub struct AttentionBlock<T = Vec<f32>> {
    /// Q, K and V concatenated at load time: `[3H, H]`.
    pub qkv: Linear<T>,
    pub out: Linear<T>,
    pub ln: LayerNorm<T>,
}

#[derive(Debug, Clone)]
pub struct FfnBlock<T = Vec<f32>> {
    pub up: Linear<T>,
    pub down: Linear<T>,
    pub ln: LayerNorm<T>,
}

/// The MLM output layer `[vocab, E_or_H]`. Tied to the word embeddings (HF's
/// default) it holds no weight of its own: one copy on the host, one upload.
#[derive(Debug, Clone)]
pub struct Decoder<T = Vec<f32>> {
    /// None: the word embeddings are the weight.
    pub w: Option<T>,
    pub b: T,
    pub in_dim: usize,
    pub out_dim: usize,
}

#[derive(Debug, Clone)]
pub struct MlmHead<T = Vec<f32>> {
    pub transform: Linear<T>,
    pub act: Activation,
    pub ln: LayerNorm<T>,
    pub decoder: Decoder<T>,
}

#[derive(Debug, Clone)]
pub enum ClassifierHead<T = Vec<f32>> {
    /// BERT/ALBERT: classifier over the tanh pooler output.
    Pooled(Linear<T>),
    /// RoBERTa (tanh) and ELECTRA (gelu): dense + act + out_proj on token 0.
    FirstToken {
        dense: Linear<T>,
        act: Activation,
        out_proj: Linear<T>,
    },
}

#[derive(Debug, Clone)]
pub enum HeadWeights<T = Vec<f32>> {
    None,
    MaskedLm(MlmHead<T>),
    QuestionAnswering(Linear<T>),
    SequenceClassification(ClassifierHead<T>),
    TokenClassification(Linear<T>),
    Discriminator {
        dense: Linear<T>,
        act: Activation,
        prediction: Linear<T>,
    },
    AlbertPreTraining {
        mlm: MlmHead<T>,
        sop: Linear<T>,
    },
}

#[derive(Debug, Clone)]
pub struct ModelWeights<T = Vec<f32>> {
    pub config: ModelConfig,
    pub embeddings: Embeddings<T>,
    pub attention: Vec<AttentionBlock<T>>,
    pub ffn: Vec<FfnBlock<T>>,
    /// The layers in execution order, as indices into `attention` and `ffn`.
    pub schedule: Vec<(usize, usize)>,
    /// Dense layer of the tanh pooler (BERT, ALBERT, RoBERTa base models).
    pub pooler: Option<Linear<T>>,
    pub head: HeadWeights<T>,
    /// Tensors present in the files but not used by this architecture.
    pub unused_tensors: Vec<String>,
}

impl<T> Linear<T> {
    pub fn map<U>(&self, f: &mut MapTensor<T, U>) -> Result<Linear<U>> {
        Ok(Linear {
            w: f(&self.w)?,
            b: f(&self.b)?,
            in_dim: self.in_dim,
            out_dim: self.out_dim,
        })
    }
}

impl<T> LayerNorm<T> {
    pub fn map<U>(&self, f: &mut MapTensor<T, U>) -> Result<LayerNorm<U>> {
        Ok(LayerNorm {
            gamma: f(&self.gamma)?,
            beta: f(&self.beta)?,
        })
    }
}

impl<T> MlmHead<T> {
    pub fn map<U>(&self, f: &mut MapTensor<T, U>) -> Result<MlmHead<U>> {
        let d = &self.decoder;
        Ok(MlmHead {
            transform: self.transform.map(f)?,
            act: self.act,
            ln: self.ln.map(f)?,
            decoder: Decoder {
                w: d.w.as_ref().map(&mut *f).transpose()?,
                b: f(&d.b)?,
                in_dim: d.in_dim,
                out_dim: d.out_dim,
            },
        })
    }
}

impl<T> HeadWeights<T> {
    pub fn map<U>(&self, f: &mut MapTensor<T, U>) -> Result<HeadWeights<U>> {
        Ok(match self {
            HeadWeights::None => HeadWeights::None,
            HeadWeights::MaskedLm(m) => HeadWeights::MaskedLm(m.map(f)?),
            HeadWeights::QuestionAnswering(l) => HeadWeights::QuestionAnswering(l.map(f)?),
            HeadWeights::SequenceClassification(ClassifierHead::Pooled(l)) => {
                HeadWeights::SequenceClassification(ClassifierHead::Pooled(l.map(f)?))
            }
            HeadWeights::SequenceClassification(ClassifierHead::FirstToken {
                dense,
                act,
                out_proj,
            }) => HeadWeights::SequenceClassification(ClassifierHead::FirstToken {
                dense: dense.map(f)?,
                act: *act,
                out_proj: out_proj.map(f)?,
            }),
            HeadWeights::TokenClassification(l) => HeadWeights::TokenClassification(l.map(f)?),
            HeadWeights::Discriminator {
                dense,
                act,
                prediction,
            } => HeadWeights::Discriminator {
                dense: dense.map(f)?,
                act: *act,
                prediction: prediction.map(f)?,
            },
            HeadWeights::AlbertPreTraining { mlm, sop } => HeadWeights::AlbertPreTraining {
                mlm: mlm.map(f)?,
                sop: sop.map(f)?,
            },
        })
    }

    /// The widest per-token output (vocab for MLM), 0 for sequence-level heads.
    pub fn token_width(&self) -> usize {
        match self {
            HeadWeights::MaskedLm(m) | HeadWeights::AlbertPreTraining { mlm: m, .. } => {
                m.decoder.out_dim
            }
            HeadWeights::QuestionAnswering(_) => 2,
            HeadWeights::TokenClassification(l) => l.out_dim,
            HeadWeights::Discriminator { .. } => 1,
            HeadWeights::None | HeadWeights::SequenceClassification(_) => 0,
        }
    }
}

impl<T> ModelWeights<T> {
    /// The same model with every tensor converted by `f` (e.g. uploaded),
    /// shared blocks converted once, as they are stored once.
    pub fn map<U>(&self, f: &mut MapTensor<T, U>) -> Result<ModelWeights<U>> {
        let e = &self.embeddings;
        let embeddings = Embeddings {
            word: f(&e.word)?,
            position: f(&e.position)?,
            token_type: f(&e.token_type)?,
            ln: e.ln.map(f)?,
            project: e.project.as_ref().map(|p| p.map(f)).transpose()?,
        };
        let attention = self
            .attention
            .iter()
            .map(|a| {
                Ok(AttentionBlock {
                    qkv: a.qkv.map(f)?,
                    out: a.out.map(f)?,
                    ln: a.ln.map(f)?,
                })
            })
            .collect::<Result<_>>()?;
        let ffn = self
            .ffn
            .iter()
            .map(|b| {
                Ok(FfnBlock {
                    up: b.up.map(f)?,
                    down: b.down.map(f)?,
                    ln: b.ln.map(f)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(ModelWeights {
            config: self.config.clone(),
            embeddings,
            attention,
            ffn,
            schedule: self.schedule.clone(),
            pooler: self.pooler.as_ref().map(|p| p.map(f)).transpose()?,
            head: self.head.map(f)?,
            unused_tensors: self.unused_tensors.clone(),
        })
    }
}

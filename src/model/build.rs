//! The one builder: a [`ModelConfig`] and a [`WeightSource`] give
//! [`ModelWeights`]. Every rule about which blocks and heads a family has
//! (MLM width and activation, classifier activation, the pooler, the E -> H
//! projection, ALBERT's layout) is written here once; a source only says what
//! a named tensor holds. Sources: the model's files ([`super::load`]) and a
//! seeded generator ([`super::random`]).

use super::*;
use crate::config::{Activation, Family, Head};
use crate::error::{Error, Result};
use crate::weights::names::{LayerNames, Names};

/// Where the numbers come from. Names are HF checkpoint names (from
/// [`Names`]); shapes are checked by the source against what it holds.
pub(crate) trait WeightSource {
    /// A weight matrix or embedding table of `shape`.
    fn matrix(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>>;
    /// A bias vector, found under the first present of `names`.
    fn bias(&mut self, names: &[String], len: usize) -> Result<Vec<f32>>;
    /// LayerNorm (gamma, beta), each found under the first present name.
    fn layer_norm(
        &mut self,
        gamma: &[String; 2],
        beta: &[String; 2],
        dim: usize,
    ) -> Result<LayerNorm>;
    /// Whether an optional module is there. `hf_builds_it` is what HF's
    /// classes construct for this config; a source without files follows it.
    fn has(&self, weight_name: &str, hf_builds_it: bool) -> bool;
    /// The names present in the source (to pick `bert.`-prefixed or bare).
    fn names(&self) -> Vec<String>;
    /// Marks a tensor as known but not needed (buffers, tied duplicates).
    fn skip(&mut self, name: &str);
    /// Tensors present but not used, for the warning.
    fn unused(&self) -> Vec<String>;
    /// What to call the source in error messages.
    fn describe(&self) -> String;
}

/// Does HF's class for this (family, head) build a pooler? BERT, ALBERT and
/// RoBERTa base models, BERT/ALBERT sequence classification and ALBERT
/// pre-training do; ELECTRA never; token-level heads use add_pooling_layer=False.
fn hf_builds_pooler(cfg: &ModelConfig) -> bool {
    match cfg.head {
        Head::SequenceClassification | Head::AlbertPreTraining => {
            matches!(cfg.family, Family::Bert | Family::Albert)
        }
        Head::Base => cfg.family != Family::Electra,
        _ => false,
    }
}

/// Which encoder linear a [`build_weights_with`] hook is handed, by its
/// index in [`ModelWeights`]'s `attention` / `ffn` blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EncoderLinear {
    Project,
    Qkv(usize),
    Out(usize),
    Up(usize),
    Down(usize),
}

/// Called on each encoder linear as soon as it is read (a CPU engine packs
/// it and drops the f32, so loading never holds every layer's f32 at once).
pub type LinearHook<'h> = &'h mut dyn FnMut(EncoderLinear, &mut Linear);

struct Builder<'a, 'h, S: WeightSource> {
    src: &'a mut S,
    cfg: &'a ModelConfig,
    names: Names,
    hook: LinearHook<'h>,
    /// Attention and FFN blocks built so far: the next one's index.
    built: (usize, usize),
}

impl<S: WeightSource> Builder<'_, '_, S> {
    fn linear(&mut self, prefix: &str, in_dim: usize, out_dim: usize) -> Result<Linear> {
        Ok(Linear {
            w: self
                .src
                .matrix(&Names::weight(prefix), &[out_dim, in_dim])?,
            b: self.src.bias(&[Names::bias(prefix)], out_dim)?,
            in_dim,
            out_dim,
        })
    }

    fn layer_norm(&mut self, prefix: &str, dim: usize) -> Result<LayerNorm> {
        let (g, b) = Names::ln_params(prefix);
        self.src.layer_norm(&g, &b, dim)
    }

    fn attention(&mut self, n: &LayerNames) -> Result<AttentionBlock> {
        let h = self.cfg.hidden_size;
        let q = self.linear(&n.query, h, h)?;
        let k = self.linear(&n.key, h, h)?;
        let v = self.linear(&n.value, h, h)?;
        // Fused QKV: one GEMM instead of three, rows q | k | v.
        let qkv = Linear {
            w: [q.w, k.w, v.w].concat(),
            b: [q.b, k.b, v.b].concat(),
            in_dim: h,
            out_dim: 3 * h,
        };
        let mut block = AttentionBlock {
            qkv,
            out: self.linear(&n.attn_out, h, h)?,
            ln: self.layer_norm(&n.attn_ln, h)?,
        };
        let i = self.built.0;
        self.built.0 += 1;
        (self.hook)(EncoderLinear::Qkv(i), &mut block.qkv);
        (self.hook)(EncoderLinear::Out(i), &mut block.out);
        Ok(block)
    }

    fn ffn(&mut self, n: &LayerNames) -> Result<FfnBlock> {
        let (h, i) = (self.cfg.hidden_size, self.cfg.intermediate_size);
        let mut block = FfnBlock {
            up: self.linear(&n.ffn_in, h, i)?,
            down: self.linear(&n.ffn_out, i, h)?,
            ln: self.layer_norm(&n.ffn_ln, h)?,
        };
        let j = self.built.1;
        self.built.1 += 1;
        (self.hook)(EncoderLinear::Up(j), &mut block.up);
        (self.hook)(EncoderLinear::Down(j), &mut block.down);
        Ok(block)
    }

    fn embeddings(&mut self) -> Result<Embeddings> {
        let c = self.cfg;
        let (e, h) = (c.embedding_size, c.hidden_size);
        let word = self.src.matrix(
            &Names::weight(&self.names.word_embeddings()),
            &[c.vocab_size, e],
        )?;
        let position = self.src.matrix(
            &Names::weight(&self.names.position_embeddings()),
            &[c.max_position_embeddings, e],
        )?;
        let token_type = if c.type_vocab_size > 0 {
            self.src.matrix(
                &Names::weight(&self.names.token_type_embeddings()),
                &[c.type_vocab_size, e],
            )?
        } else {
            Vec::new()
        };
        let project = if e != h || c.family == Family::Albert {
            let mut p = self.linear(&self.names.embeddings_projection(), e, h)?;
            (self.hook)(EncoderLinear::Project, &mut p);
            Some(p)
        } else {
            None
        };
        Ok(Embeddings {
            ln: self.layer_norm(&self.names.embeddings_ln(), e)?,
            word,
            position,
            token_type,
            project,
        })
    }

    fn blocks(&mut self) -> Result<Blocks> {
        let c = self.cfg;
        if c.family == Family::Albert {
            // Both closures need the builder, in layout order.
            let this = std::cell::RefCell::new(self);
            let names = this.borrow().names.clone();
            return albert_layout(
                c,
                |g, j| this.borrow_mut().attention(&names.albert_layer(g, j)),
                |g, j| this.borrow_mut().ffn(&names.albert_layer(g, j)),
            );
        }
        let (mut a, mut f) = (Vec::new(), Vec::new());
        for i in 0..c.num_layers {
            let n = self.names.layer(i);
            a.push(self.attention(&n)?);
            f.push(self.ffn(&n)?);
        }
        Ok((a, f, (0..c.num_layers).map(|i| (i, i)).collect()))
    }

    fn mlm(&mut self) -> Result<MlmHead> {
        let c = self.cfg;
        let m = self.names.mlm_head();
        // ALBERT and the ELECTRA generator predict from E-wide vectors.
        let e = match c.family {
            Family::Albert | Family::Electra => c.embedding_size,
            _ => c.hidden_size,
        };
        let act = match c.family {
            Family::Bert | Family::Albert => c.act,
            // RobertaLMHead and ElectraGeneratorPredictions hard-code gelu.
            _ => Activation::Gelu,
        };
        let v = c.vocab_size;
        let dec_w = Names::weight(&m.decoder);
        // Tied to the input embeddings (tie_word_embeddings) unless stored:
        // then the decoder holds no weight of its own.
        let w = if self.src.has(&dec_w, false) {
            Some(self.src.matrix(&dec_w, &[v, e])?)
        } else {
            None
        };
        let b = self.src.bias(&m.bias_candidates, v)?;
        for name in &m.bias_candidates {
            self.src.skip(name); // the tied duplicate of the same bias
        }
        Ok(MlmHead {
            transform: self.linear(&m.dense, c.hidden_size, e)?,
            act,
            ln: self.layer_norm(&m.ln, e)?,
            decoder: Decoder {
                w,
                b,
                in_dim: e,
                out_dim: v,
            },
        })
    }

    fn head(&mut self, pooler: Option<&Linear>) -> Result<HeadWeights> {
        let c = self.cfg;
        let (h, n_labels) = (c.hidden_size, c.num_labels);
        let need_pooler = |src: &S, names: &Names| -> Result<()> {
            match pooler {
                Some(_) => Ok(()),
                None => Err(Error::tensor(
                    Names::weight(&names.pooler()),
                    format!(
                        "missing from {}; {} needs the pooler",
                        src.describe(),
                        c.architecture
                    ),
                )),
            }
        };
        Ok(match c.head {
            Head::Base => HeadWeights::None,
            Head::MaskedLm => HeadWeights::MaskedLm(self.mlm()?),
            Head::QuestionAnswering => {
                HeadWeights::QuestionAnswering(self.linear(Names::QA_OUTPUTS, h, 2)?)
            }
            Head::TokenClassification => {
                HeadWeights::TokenClassification(self.linear(Names::CLASSIFIER, h, n_labels)?)
            }
            Head::SequenceClassification => HeadWeights::SequenceClassification(match c.family {
                Family::Bert | Family::Albert => {
                    need_pooler(self.src, &self.names)?;
                    ClassifierHead::Pooled(self.linear(Names::CLASSIFIER, h, n_labels)?)
                }
                Family::Roberta | Family::XlmRoberta | Family::Electra => {
                    ClassifierHead::FirstToken {
                        dense: self.linear(Names::CLASSIFIER_DENSE, h, h)?,
                        act: if c.family == Family::Electra {
                            Activation::Gelu
                        } else {
                            Activation::Tanh
                        },
                        out_proj: self.linear(Names::CLASSIFIER_OUT_PROJ, h, n_labels)?,
                    }
                }
            }),
            Head::Discriminator => HeadWeights::Discriminator {
                dense: self.linear(Names::DISCRIMINATOR_DENSE, h, h)?,
                act: c.act,
                prediction: self.linear(Names::DISCRIMINATOR_PREDICTION, h, 1)?,
            },
            Head::AlbertPreTraining => {
                need_pooler(self.src, &self.names)?;
                HeadWeights::AlbertPreTraining {
                    mlm: self.mlm()?,
                    sop: self.linear(Names::SOP_CLASSIFIER, h, 2)?,
                }
            }
        })
    }
}

/// Builds every tensor the architecture in `cfg` needs from `src`, handing
/// each encoder linear to `hook` once read.
pub(crate) fn build_weights_with(
    cfg: &ModelConfig,
    src: &mut impl WeightSource,
    hook: LinearHook,
) -> Result<ModelWeights> {
    let present = src.names();
    let names = Names::detect(cfg.family, present.iter());
    for b in names.buffers() {
        src.skip(&b);
    }
    let mut b = Builder {
        src,
        cfg,
        names,
        hook,
        built: (0, 0),
    };
    let embeddings = b.embeddings()?;
    let (attention, ffn, schedule) = b.blocks()?;
    let pooler_name = b.names.pooler();
    let pooler = if b
        .src
        .has(&Names::weight(&pooler_name), hf_builds_pooler(cfg))
    {
        Some(b.linear(&pooler_name, cfg.hidden_size, cfg.hidden_size)?)
    } else {
        None
    };
    let head = b.head(pooler.as_ref())?;
    Ok(ModelWeights {
        config: cfg.clone(),
        embeddings,
        attention,
        ffn,
        schedule,
        pooler,
        head,
        unused_tensors: b.src.unused(),
    })
}

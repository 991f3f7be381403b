//! WeightStore + ModelConfig -> ModelWeights, checking every shape against the
//! config and naming the tensor on any mismatch.

use super::*;
use crate::config::{Family, Head};
use crate::error::{Error, Result};
use crate::weights::names::{LayerNames, Names};
use crate::weights::WeightStore;

struct Loader<'a> {
    store: &'a WeightStore,
}

impl Loader<'_> {
    fn linear(&self, prefix: &str, in_dim: usize, out_dim: usize) -> Result<Linear> {
        Ok(Linear {
            w: self.store.get(&Names::weight(prefix), &[out_dim, in_dim])?,
            b: self.store.get(&Names::bias(prefix), &[out_dim])?,
            in_dim,
            out_dim,
        })
    }

    fn layer_norm(&self, prefix: &str, dim: usize) -> Result<LayerNorm> {
        let (g, b) = Names::ln_params(prefix);
        let pick = |c: &[String; 2]| self.store.find(c).unwrap_or(&c[0]).to_string();
        Ok(LayerNorm {
            gamma: self.store.get(&pick(&g), &[dim])?,
            beta: self.store.get(&pick(&b), &[dim])?,
        })
    }

    fn attention(&self, n: &LayerNames, h: usize) -> Result<AttentionBlock> {
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
        Ok(AttentionBlock {
            qkv,
            out: self.linear(&n.attn_out, h, h)?,
            ln: self.layer_norm(&n.attn_ln, h)?,
        })
    }

    fn ffn(&self, n: &LayerNames, h: usize, i: usize) -> Result<FfnBlock> {
        Ok(FfnBlock {
            up: self.linear(&n.ffn_in, h, i)?,
            down: self.linear(&n.ffn_out, i, h)?,
            ln: self.layer_norm(&n.ffn_ln, h)?,
        })
    }

    fn mlm(&self, names: &Names, cfg: &ModelConfig, word: &[f32]) -> Result<MlmHead> {
        let m = names.mlm_head();
        // ALBERT and the ELECTRA generator predict from E-wide vectors.
        let e = match cfg.family {
            Family::Albert | Family::Electra => cfg.embedding_size,
            _ => cfg.hidden_size,
        };
        let act = match cfg.family {
            Family::Bert | Family::Albert => cfg.act,
            // RobertaLMHead and ElectraGeneratorPredictions hard-code gelu.
            _ => Activation::Gelu,
        };
        let v = cfg.vocab_size;
        let dec_w = Names::weight(&m.decoder);
        let w = if self.store.contains(&dec_w) {
            self.store.get(&dec_w, &[v, e])?
        } else {
            // Tied to the input embeddings (tie_word_embeddings).
            word.to_vec()
        };
        let bias_name = self
            .store
            .find(&m.bias_candidates)
            .ok_or_else(|| {
                Error::tensor(
                    &m.bias_candidates[0],
                    format!(
                        "MLM decoder bias missing from {}",
                        self.store.source.display()
                    ),
                )
            })?
            .to_string();
        let b = self.store.get(&bias_name, &[v])?;
        for c in &m.bias_candidates {
            if self.store.contains(c) {
                self.store.skip(c); // the tied duplicate of the same bias
            }
        }
        Ok(MlmHead {
            transform: self.linear(&m.dense, cfg.hidden_size, e)?,
            act,
            ln: self.layer_norm(&m.ln, e)?,
            decoder: Linear {
                w,
                b,
                in_dim: e,
                out_dim: v,
            },
        })
    }
}

/// Reads every tensor the architecture in `cfg` needs from `store`.
pub fn load_weights(cfg: &ModelConfig, store: &WeightStore) -> Result<ModelWeights> {
    let names = Names::detect(cfg.family, store.names());
    let l = Loader { store };
    let (h, e, inter) = (cfg.hidden_size, cfg.embedding_size, cfg.intermediate_size);
    for b in names.buffers() {
        store.skip(&b);
    }

    let word = store.get(
        &Names::weight(&names.word_embeddings()),
        &[cfg.vocab_size, e],
    )?;
    let position = store.get(
        &Names::weight(&names.position_embeddings()),
        &[cfg.max_position_embeddings, e],
    )?;
    let token_type = if cfg.type_vocab_size > 0 {
        store.get(
            &Names::weight(&names.token_type_embeddings()),
            &[cfg.type_vocab_size, e],
        )?
    } else {
        Vec::new()
    };
    let project = if e != h || cfg.family == Family::Albert {
        Some(l.linear(&names.embeddings_projection(), e, h)?)
    } else {
        None
    };
    let embeddings = Embeddings {
        ln: l.layer_norm(&names.embeddings_ln(), e)?,
        word,
        position,
        token_type,
        project,
    };

    let (attention, ffn, schedule) = if cfg.family == Family::Albert {
        albert_blocks(cfg, &names, &l)?
    } else {
        let mut a = Vec::new();
        let mut f = Vec::new();
        for i in 0..cfg.num_layers {
            let n = names.layer(i);
            a.push(l.attention(&n, h)?);
            f.push(l.ffn(&n, h, inter)?);
        }
        (a, f, (0..cfg.num_layers).map(|i| (i, i)).collect())
    };

    let pooler_name = names.pooler();
    let pooler = if store.contains(&Names::weight(&pooler_name)) {
        Some(l.linear(&pooler_name, h, h)?)
    } else {
        None
    };
    let need_pooler = |what: &str| -> Result<Linear> {
        pooler.clone().ok_or_else(|| {
            Error::tensor(
                Names::weight(&pooler_name),
                format!(
                    "missing from {}; {what} needs the pooler",
                    store.source.display()
                ),
            )
        })
    };

    let n_labels = cfg.num_labels;
    let head = match cfg.head {
        Head::Base => HeadWeights::None,
        Head::MaskedLm => HeadWeights::MaskedLm(l.mlm(&names, cfg, &embeddings.word)?),
        Head::QuestionAnswering => {
            HeadWeights::QuestionAnswering(l.linear(Names::QA_OUTPUTS, h, 2)?)
        }
        Head::TokenClassification => {
            HeadWeights::TokenClassification(l.linear(Names::CLASSIFIER, h, n_labels)?)
        }
        Head::SequenceClassification => HeadWeights::SequenceClassification(match cfg.family {
            Family::Bert | Family::Albert => {
                need_pooler(&cfg.architecture)?;
                ClassifierHead::Pooled(l.linear(Names::CLASSIFIER, h, n_labels)?)
            }
            Family::Roberta | Family::XlmRoberta | Family::Electra => ClassifierHead::FirstToken {
                dense: l.linear(Names::CLASSIFIER_DENSE, h, h)?,
                act: if cfg.family == Family::Electra {
                    Activation::Gelu
                } else {
                    Activation::Tanh
                },
                out_proj: l.linear(Names::CLASSIFIER_OUT_PROJ, h, n_labels)?,
            },
        }),
        Head::Discriminator => HeadWeights::Discriminator {
            dense: l.linear(Names::DISCRIMINATOR_DENSE, h, h)?,
            act: cfg.act,
            prediction: l.linear(Names::DISCRIMINATOR_PREDICTION, h, 1)?,
        },
        Head::AlbertPreTraining => {
            need_pooler(&cfg.architecture)?;
            HeadWeights::AlbertPreTraining {
                mlm: l.mlm(&names, cfg, &embeddings.word)?,
                sop: l.linear(Names::SOP_CLASSIFIER, h, 2)?,
            }
        }
    };

    Ok(ModelWeights {
        config: cfg.clone(),
        embeddings,
        attention,
        ffn,
        schedule,
        pooler,
        head,
        unused_tensors: store.unused(),
    })
}

/// ALBERT blocks from `encoder.albert_layer_groups.G.albert_layers.J`.
fn albert_blocks(cfg: &ModelConfig, names: &Names, l: &Loader) -> Result<Blocks> {
    let (h, inter) = (cfg.hidden_size, cfg.intermediate_size);
    albert_layout(
        cfg,
        |g, j| l.attention(&names.albert_layer(g, j), h),
        |g, j| l.ffn(&names.albert_layer(g, j), h, inter),
    )
}

//! Deterministic random weights for any [`ModelConfig`]: what the benchmarks
//! run when no trained weights are at hand (`bertrt bench --model bert-base`).
//!
//! Values follow HF's `_init_weights` in spirit: matrices and embedding tables
//! ~ U(-a, a) with the standard deviation 0.02 of N(0, 0.02), biases 0,
//! LayerNorm gamma 1 and beta 0. The generator is a tiny xorshift64*, so the
//! same (config, seed) gives the same bits on every machine. These weights are
//! for timing only; comparisons against PyTorch load the HF model's own
//! weights from a folder instead (scripts/compare_torch.py).
//!
//! The layout is exactly what [`load_weights`](super::load_weights) builds:
//! QKV fused `[3H, H]`, ALBERT blocks stored once per (group, inner layer)
//! with the schedule repeating them (and the partial `sharing` modes pointing
//! at group 0), the E -> H projection when E != H or for ALBERT, the pooler
//! where the family/head has one, and the head named by `cfg.head`.

use super::*;
use crate::config::{Family, Head};

/// std of HF's `initializer_range` default.
const STD: f32 = 0.02;

use crate::rng::Rng;

impl Rng {
    /// n values with mean 0 and standard deviation `STD` (uniform: a = std*sqrt(3)).
    fn normalish(&mut self, n: usize) -> Vec<f32> {
        let a = STD * 3f32.sqrt();
        (0..n).map(|_| self.unit() * a).collect()
    }

    fn linear(&mut self, in_dim: usize, out_dim: usize) -> Linear {
        Linear {
            w: self.normalish(out_dim * in_dim),
            b: vec![0.0; out_dim],
            in_dim,
            out_dim,
        }
    }

    fn attention(&mut self, h: usize) -> AttentionBlock {
        AttentionBlock {
            qkv: self.linear(h, 3 * h),
            out: self.linear(h, h),
            ln: layer_norm(h),
        }
    }

    fn ffn(&mut self, h: usize, i: usize) -> FfnBlock {
        FfnBlock {
            up: self.linear(h, i),
            down: self.linear(i, h),
            ln: layer_norm(h),
        }
    }
}

fn layer_norm(dim: usize) -> LayerNorm {
    LayerNorm {
        gamma: vec![1.0; dim],
        beta: vec![0.0; dim],
    }
}

/// Random weights shaped for `cfg`, the same for the same `seed`.
pub fn random_weights(cfg: &ModelConfig, seed: u64) -> ModelWeights {
    let mut r = Rng::new(seed);
    let (h, e, inter) = (cfg.hidden_size, cfg.embedding_size, cfg.intermediate_size);

    let word = r.normalish(cfg.vocab_size * e);
    let embeddings = Embeddings {
        position: r.normalish(cfg.max_position_embeddings * e),
        token_type: r.normalish(cfg.type_vocab_size * e),
        ln: layer_norm(e),
        project: (e != h || cfg.family == Family::Albert).then(|| r.linear(e, h)),
        word,
    };

    let (attention, ffn, schedule) = if cfg.family == Family::Albert {
        albert_blocks(cfg, &mut r)
    } else {
        let attention = (0..cfg.num_layers).map(|_| r.attention(h)).collect();
        let ffn = (0..cfg.num_layers).map(|_| r.ffn(h, inter)).collect();
        (
            attention,
            ffn,
            (0..cfg.num_layers).map(|i| (i, i)).collect(),
        )
    };

    // HF builds a pooler for BERT/ALBERT/RoBERTa base models, BERT/ALBERT
    // sequence classification and ALBERT pre-training; ELECTRA has none, and
    // the token-level heads are built with add_pooling_layer=False.
    let pooler_needed = match cfg.head {
        Head::SequenceClassification | Head::AlbertPreTraining => {
            matches!(cfg.family, Family::Bert | Family::Albert)
        }
        Head::Base => cfg.family != Family::Electra,
        _ => false,
    };
    let pooler = pooler_needed.then(|| r.linear(h, h));

    let mlm = |r: &mut Rng, word: &[f32]| {
        let me = match cfg.family {
            Family::Albert | Family::Electra => e,
            _ => h,
        };
        let act = match cfg.family {
            Family::Bert | Family::Albert => cfg.act,
            _ => Activation::Gelu,
        };
        MlmHead {
            transform: r.linear(h, me),
            act,
            ln: layer_norm(me),
            // Tied to the word embeddings, as HF does by default.
            decoder: Linear {
                w: if me == e {
                    word.to_vec()
                } else {
                    r.normalish(cfg.vocab_size * me)
                },
                b: vec![0.0; cfg.vocab_size],
                in_dim: me,
                out_dim: cfg.vocab_size,
            },
        }
    };
    let n_labels = cfg.num_labels;
    let head = match cfg.head {
        Head::Base => HeadWeights::None,
        Head::MaskedLm => HeadWeights::MaskedLm(mlm(&mut r, &embeddings.word)),
        Head::QuestionAnswering => HeadWeights::QuestionAnswering(r.linear(h, 2)),
        Head::TokenClassification => HeadWeights::TokenClassification(r.linear(h, n_labels)),
        Head::SequenceClassification => HeadWeights::SequenceClassification(match cfg.family {
            Family::Bert | Family::Albert => ClassifierHead::Pooled(r.linear(h, n_labels)),
            Family::Roberta | Family::XlmRoberta | Family::Electra => ClassifierHead::FirstToken {
                dense: r.linear(h, h),
                act: if cfg.family == Family::Electra {
                    Activation::Gelu
                } else {
                    Activation::Tanh
                },
                out_proj: r.linear(h, n_labels),
            },
        }),
        Head::Discriminator => HeadWeights::Discriminator {
            dense: r.linear(h, h),
            act: cfg.act,
            prediction: r.linear(h, 1),
        },
        Head::AlbertPreTraining => HeadWeights::AlbertPreTraining {
            mlm: mlm(&mut r, &embeddings.word),
            sop: r.linear(h, 2),
        },
    };

    ModelWeights {
        config: cfg.clone(),
        embeddings,
        attention,
        ffn,
        schedule,
        pooler,
        head,
        unused_tensors: Vec::new(),
    }
}

fn albert_blocks(cfg: &ModelConfig, r: &mut Rng) -> Blocks {
    let (h, inter) = (cfg.hidden_size, cfg.intermediate_size);
    // Both closures draw from one generator, in layout order.
    let r = std::cell::RefCell::new(r);
    let layout: Result<Blocks, std::convert::Infallible> = albert_layout(
        cfg,
        |_, _| Ok(r.borrow_mut().attention(h)),
        |_, _| Ok(r.borrow_mut().ffn(h, inter)),
    );
    match layout {
        Ok(b) => b,
        Err(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cfg(json: &str) -> ModelConfig {
        ModelConfig::from_json_str(json, Path::new("test")).unwrap()
    }

    #[test]
    fn deterministic_and_shaped() {
        let c = cfg(
            r#"{"model_type":"bert","architectures":["BertForMaskedLM"],"hidden_size":32,
            "num_attention_heads":4,"num_hidden_layers":2,"intermediate_size":64,
            "max_position_embeddings":40,"vocab_size":50}"#,
        );
        let a = random_weights(&c, 7);
        let b = random_weights(&c, 7);
        let d = random_weights(&c, 8);
        assert_eq!(a.attention[1].qkv.w, b.attention[1].qkv.w);
        assert_ne!(a.attention[1].qkv.w, d.attention[1].qkv.w);
        assert_eq!(a.attention[0].qkv.w.len(), 3 * 32 * 32);
        assert_eq!(a.schedule, vec![(0, 0), (1, 1)]);
        assert!(a.embeddings.project.is_none() && a.pooler.is_none());
        let w = &a.attention[0].qkv.w;
        let mean = w.iter().sum::<f32>() / w.len() as f32;
        let std = (w.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / w.len() as f32).sqrt();
        assert!(
            mean.abs() < 2e-3 && (std - STD).abs() < 2e-3,
            "mean {mean} std {std}"
        );
        assert!(matches!(a.head, HeadWeights::MaskedLm(_)));
    }

    #[test]
    fn albert_schedule_and_sharing() {
        let base = r#""model_type":"albert","hidden_size":16,"embedding_size":8,"num_attention_heads":2,
            "intermediate_size":32,"max_position_embeddings":20,"vocab_size":30"#;
        let all = random_weights(
            &cfg(&format!(
                r#"{{{base},"num_hidden_layers":4,"num_hidden_groups":2,"inner_group_num":2}}"#
            )),
            1,
        );
        assert_eq!((all.attention.len(), all.ffn.len()), (4, 4));
        assert_eq!(
            all.schedule,
            vec![
                (0, 0),
                (1, 1),
                (0, 0),
                (1, 1),
                (2, 2),
                (3, 3),
                (2, 2),
                (3, 3)
            ]
        );
        assert_eq!(
            all.embeddings
                .project
                .as_ref()
                .map(|p| (p.in_dim, p.out_dim)),
            Some((8, 16))
        );
        assert!(all.pooler.is_some());
        let att = random_weights(
            &cfg(&format!(
                r#"{{{base},"num_hidden_layers":3,"num_hidden_groups":3,"sharing":"attention"}}"#
            )),
            1,
        );
        assert_eq!((att.attention.len(), att.ffn.len()), (1, 3));
        assert_eq!(att.schedule, vec![(0, 0), (0, 1), (0, 2)]);
        let ffn = random_weights(
            &cfg(&format!(
                r#"{{{base},"num_hidden_layers":3,"num_hidden_groups":3,"sharing":"ffn"}}"#
            )),
            1,
        );
        assert_eq!((ffn.attention.len(), ffn.ffn.len()), (3, 1));
        let none = random_weights(
            &cfg(&format!(
                r#"{{{base},"num_hidden_layers":3,"num_hidden_groups":3,"sharing":"none"}}"#
            )),
            1,
        );
        assert_eq!((none.attention.len(), none.ffn.len()), (3, 3));
    }

    #[test]
    fn runs_on_the_cpu_engine() {
        use crate::batch::{Batch, SequenceIds};
        let c = cfg(
            r#"{"model_type":"electra","architectures":["ElectraForPreTraining"],"hidden_size":16,
            "embedding_size":8,"num_attention_heads":2,"num_hidden_layers":2,"intermediate_size":32,
            "max_position_embeddings":20,"vocab_size":30}"#,
        );
        let w = random_weights(&c, 3);
        let b = Batch::pack(
            &[SequenceIds {
                input_ids: vec![1, 2, 3],
                token_type_ids: vec![],
            }],
            &c,
        )
        .unwrap();
        let out = crate::backend::cpu::CpuEngine::new(w).forward(&b).unwrap();
        assert_eq!(out.hidden.len(), 3 * 16);
        assert!(out.hidden.iter().all(|x| x.is_finite()));
    }
}

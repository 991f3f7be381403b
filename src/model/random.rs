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
//! The layout is the one [`build_weights_with`] makes for files too: this source
//! only supplies numbers, and follows HF's classes for optional modules (the
//! pooler; the MLM decoder is tied, as HF ties it by default).

use super::build::{build_weights_with, LinearHook, WeightSource};
use super::*;
use crate::error::Result;
use crate::rng::Rng;

/// std of HF's `initializer_range` default.
const STD: f32 = 0.02;

struct SeededSource(Rng);

impl WeightSource for SeededSource {
    fn matrix(&mut self, _name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        // n values with mean 0 and standard deviation STD (uniform: a = std*sqrt(3)).
        let a = STD * 3f32.sqrt();
        let n: usize = shape.iter().product();
        Ok((0..n).map(|_| self.0.unit() * a).collect())
    }

    fn bias(&mut self, _names: &[String], len: usize) -> Result<Vec<f32>> {
        Ok(vec![0.0; len])
    }

    fn layer_norm(
        &mut self,
        _gamma: &[String; 2],
        _beta: &[String; 2],
        dim: usize,
    ) -> Result<LayerNorm> {
        Ok(LayerNorm {
            gamma: vec![1.0; dim],
            beta: vec![0.0; dim],
        })
    }

    fn has(&self, _weight_name: &str, hf_builds_it: bool) -> bool {
        hf_builds_it
    }

    fn names(&self) -> Vec<String> {
        Vec::new()
    }

    fn skip(&mut self, _name: &str) {}

    fn unused(&self) -> Vec<String> {
        Vec::new()
    }

    fn describe(&self) -> String {
        "random weights".to_string()
    }
}

/// Random weights shaped for `cfg`, the same for the same `seed`.
pub fn random_weights(cfg: &ModelConfig, seed: u64) -> Result<ModelWeights> {
    random_weights_with(cfg, seed, &mut |_, _| {})
}

/// [`random_weights`], handing each encoder linear to `hook` once made.
pub fn random_weights_with(cfg: &ModelConfig, seed: u64, hook: LinearHook) -> Result<ModelWeights> {
    build_weights_with(cfg, &mut SeededSource(Rng::new(seed)), hook)
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
        let a = random_weights(&c, 7).unwrap();
        let b = random_weights(&c, 7).unwrap();
        let d = random_weights(&c, 8).unwrap();
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
        )
        .unwrap();
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
        )
        .unwrap();
        assert_eq!((att.attention.len(), att.ffn.len()), (1, 3));
        assert_eq!(att.schedule, vec![(0, 0), (0, 1), (0, 2)]);
        let ffn = random_weights(
            &cfg(&format!(
                r#"{{{base},"num_hidden_layers":3,"num_hidden_groups":3,"sharing":"ffn"}}"#
            )),
            1,
        )
        .unwrap();
        assert_eq!((ffn.attention.len(), ffn.ffn.len()), (3, 1));
        let none = random_weights(
            &cfg(&format!(
                r#"{{{base},"num_hidden_layers":3,"num_hidden_groups":3,"sharing":"none"}}"#
            )),
            1,
        )
        .unwrap();
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
        let w = random_weights(&c, 3).unwrap();
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

//! Tier 2: the whole f32 CPU model against HF transformers' outputs on the
//! same inputs (tests/fixtures, made by scripts/gen_fixtures.py), 1e-4.

mod common;

use bertrt::backend::cpu::CpuEngine;
use bertrt::batch::{Batch, SequenceIds};
use bertrt::config::ModelConfig;
use bertrt::model::load_weights;
use bertrt::output::HeadOutput;
use bertrt::weights::WeightStore;
use common::*;

const ATOL: f64 = 1e-4;

/// Rows of a padded golden `[B, L, ...]` tensor that are real tokens, packed.
fn unpad(g: &Golden, lens: &[usize]) -> Vec<f64> {
    let (b, l) = (g.shape[0], g.shape[1]);
    let w: usize = g.shape[2..].iter().product();
    let mut out = Vec::new();
    for (s, len) in lens.iter().enumerate().take(b) {
        out.extend_from_slice(&g.data[s * l * w..(s * l + len) * w]);
    }
    out
}

fn check_model(name: &str) {
    let dir = model_dir(name);
    let cfg = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    let store = WeightStore::open_dir(&dir).unwrap();
    let weights = load_weights(&cfg, &store).unwrap();
    assert!(
        weights.unused_tensors.is_empty(),
        "{name}: unused tensors {:?}",
        weights.unused_tensors
    );
    let engine = CpuEngine::new(weights);
    let g = load_golden(name);

    let ids = &g["input_ids"];
    let mask = &g["attention_mask"];
    let types = &g["token_type_ids"];
    let (b, l) = (ids.shape[0], ids.shape[1]);
    let mut seqs = Vec::new();
    let mut lens = Vec::new();
    for s in 0..b {
        let n = (0..l).filter(|&j| mask.data[s * l + j] != 0.0).count();
        lens.push(n);
        seqs.push(SequenceIds {
            input_ids: (0..n).map(|j| ids.data[s * l + j] as u32).collect(),
            token_type_ids: (0..n).map(|j| types.data[s * l + j] as u32).collect(),
        });
    }
    let batch = Batch::pack(&seqs, &cfg).unwrap();
    let out = engine.forward(&batch).unwrap();

    let mut failures = Vec::new();
    let mut check = |what: &str, got: &[f32], want: Vec<f64>| match compare(
        &format!("{name} {what}"),
        got,
        &want,
        ATOL,
        0.0,
    ) {
        Ok(e) => eprintln!("{name} {what}: max |err| {e:.2e}"),
        Err(msg) => failures.push(msg),
    };
    check(
        "last_hidden_state",
        &out.hidden,
        unpad(&g["last_hidden_state"], &lens),
    );
    if let Some(p) = g.get("pooler_output") {
        let got = out.pooled.as_ref().expect("model has a pooler in HF");
        check("pooler_output", got, p.data.clone());
    }
    match &out.head {
        HeadOutput::None => {}
        HeadOutput::TokenLogits(x) => check("logits", x, unpad(&g["logits"], &lens)),
        HeadOutput::SequenceLogits(x) => check("logits", x, g["logits"].data.clone()),
        HeadOutput::StartEnd { start, end } => {
            check("start_logits", start, unpad(&g["start_logits"], &lens));
            check("end_logits", end, unpad(&g["end_logits"], &lens));
        }
        HeadOutput::PreTraining { mlm, sop } => {
            check("prediction_logits", mlm, unpad(&g["logits"], &lens));
            check("sop_logits", sop, g["sop_logits"].data.clone());
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

macro_rules! golden {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            check_model(stringify!($name));
        }
    )*};
}

golden!(
    bert_mlm,
    bert_model_f16,
    bert_model_bf16,
    bert_cls,
    bert_tokcls,
    bert_qa,
    bert_sharded,
    roberta_mlm,
    roberta_cls,
    roberta_qa,
    xlmr_model,
    albert_mlm,
    albert_pretrain,
    albert_cls,
    albert_share_attention,
    albert_share_ffn,
    albert_share_none,
    electra_disc,
    electra_gen,
    electra_cls,
);

/// Rewrites a fixture's safetensors through `edit`, in a scratch folder.
fn rewritten(name: &str, tag: &str, edit: impl Fn(&str) -> Option<String>) -> std::path::PathBuf {
    let src = model_dir(name);
    let dst = std::env::temp_dir().join(format!("bertrt-golden-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .filter_map(|(n, v)| edit(&n).map(|n2| (n2, v)))
        .collect();
    let extra = [0u8; 8];
    tensors.push((
        "some.extra.tensor".into(),
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2], &extra).unwrap(),
    ));
    std::fs::write(
        dst.join("model.safetensors"),
        safetensors::serialize(tensors, None).unwrap(),
    )
    .unwrap();
    dst
}

#[test]
fn legacy_gamma_beta_names_load_and_extras_are_reported() {
    let dir = rewritten("bert_mlm", "gamma", |n| {
        Some(
            n.replace("LayerNorm.weight", "LayerNorm.gamma")
                .replace("LayerNorm.bias", "LayerNorm.beta"),
        )
    });
    let cfg = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    let store = WeightStore::open_dir(&dir).unwrap();
    let renamed = load_weights(&cfg, &store).unwrap();
    assert_eq!(
        renamed.unused_tensors,
        vec!["some.extra.tensor".to_string()]
    );
    let original = load_weights(
        &cfg,
        &WeightStore::open_dir(&model_dir("bert_mlm")).unwrap(),
    )
    .unwrap();
    assert_eq!(renamed.embeddings.ln.gamma, original.embeddings.ln.gamma);
    assert_eq!(renamed.ffn[1].ln.beta, original.ffn[1].ln.beta);
    let eng = bertrt::Engine::load_dir(&dir, bertrt::Device::Cpu).unwrap();
    assert!(
        eng.warnings
            .iter()
            .any(|w| w.contains("some.extra.tensor") && w.contains("not used")),
        "{:?}",
        eng.warnings
    );
}

//! Tier 2: the whole f32 CPU model against HF transformers' outputs on the
//! same inputs (tests/fixtures, made by scripts/gen_fixtures.py), 1e-4.

mod common;

use bertrt::backend::cpu::CpuEngine;
use bertrt::config::ModelConfig;
use bertrt::model::load_weights;
use bertrt::output::{ForwardOutput, HeadOutput};
use bertrt::weights::WeightStore;
use common::*;

const ATOL: f64 = 1e-4;

/// The golden keys that are inputs, not outputs to compare.
const INPUTS: [&str; 3] = ["input_ids", "attention_mask", "token_type_ids"];

/// bertrt's output for a golden key (without its `pair_` prefix), and whether
/// it is per token (the golden is padded `[B, L, ...]`) or per sequence.
fn output_for<'a>(key: &str, out: &'a ForwardOutput) -> Option<(&'a [f32], bool)> {
    match (key, &out.head) {
        ("last_hidden_state", _) => Some((&out.hidden, true)),
        ("pooler_output", _) => out.pooled.as_deref().map(|p| (p, false)),
        ("logits", HeadOutput::TokenLogits(x)) => Some((x, true)),
        ("logits", HeadOutput::SequenceLogits(x)) => Some((x, false)),
        ("logits", HeadOutput::PreTraining { mlm, .. }) => Some((mlm, true)),
        ("sop_logits", HeadOutput::PreTraining { sop, .. }) => Some((sop, false)),
        ("start_logits", HeadOutput::StartEnd { start, .. }) => Some((start, true)),
        ("end_logits", HeadOutput::StartEnd { end, .. }) => Some((end, true)),
        _ => None,
    }
}

/// The golden keys each of bertrt's outputs answers to: every one must be in
/// the golden, so an output HF did not give fails too.
fn keys_of(out: &ForwardOutput) -> Vec<&'static str> {
    let mut keys = vec!["last_hidden_state"];
    if out.pooled.is_some() {
        keys.push("pooler_output");
    }
    keys.extend_from_slice(match &out.head {
        HeadOutput::None => &[][..],
        HeadOutput::TokenLogits(_) | HeadOutput::SequenceLogits(_) => &["logits"],
        HeadOutput::StartEnd { .. } => &["start_logits", "end_logits"],
        HeadOutput::PreTraining { .. } => &["logits", "sop_logits"],
    });
    keys
}

/// Every output tensor in the golden is compared (a head that regressed to
/// None fails), for the single-text batch and, where the golden has one, the
/// `pair_` batch (token types 1 on the second segment).
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

    let mut failures = Vec::new();
    let mut compared = 0;
    for prefix in ["", "pair_"] {
        let in_batch = |k: &&String| match k.strip_prefix("pair_") {
            Some(_) => prefix == "pair_",
            None => prefix.is_empty(),
        };
        let mut keys: Vec<&String> = g.keys().filter(in_batch).collect();
        keys.sort();
        if keys.is_empty() {
            continue;
        }
        let (batch, lens) = golden_batch(&g, prefix, &cfg);
        let out = engine.forward(&batch).unwrap();
        for key in keys {
            let bare = &key[prefix.len()..];
            if INPUTS.contains(&bare) {
                continue;
            }
            let want = &g[key];
            match output_for(bare, &out) {
                Some((got, per_token)) => {
                    let want = if per_token {
                        unpad(want, &lens)
                    } else {
                        want.data.clone()
                    };
                    match compare(&format!("{name} {key}"), got, &want, ATOL, 0.0) {
                        Ok(e) => eprintln!("{name} {key}: max |err| {e:.2e}"),
                        Err(msg) => failures.push(msg),
                    }
                    compared += 1;
                }
                None => failures.push(format!(
                    "{name} {key}: in the golden, but bertrt gives no such output (pooled: {}, head: {})",
                    out.pooled.is_some(),
                    head_name(&out.head)
                )),
            }
        }
        for k in keys_of(&out) {
            if !g.contains_key(&format!("{prefix}{k}")) {
                failures.push(format!(
                    "{name}: bertrt gives {prefix}{k}, which HF's golden does not have"
                ));
            }
        }
    }
    assert!(compared > 0, "{name}: the golden has no output to compare");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn head_name(h: &HeadOutput) -> &'static str {
    match h {
        HeadOutput::None => "None",
        HeadOutput::TokenLogits(_) => "TokenLogits",
        HeadOutput::SequenceLogits(_) => "SequenceLogits",
        HeadOutput::StartEnd { .. } => "StartEnd",
        HeadOutput::PreTraining { .. } => "PreTraining",
    }
}

/// Every model folder in tests/fixtures/models, each against
/// tests/fixtures/golden/<name>.safetensors.
#[test]
fn every_fixture_model_matches_its_golden() {
    for_each_fixture_model(check_model);
}

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

//! Tasks against HF pipelines' outputs (tests/fixtures/golden/pipelines.json).

mod common;

use bertrt::tasks::{classify, fill_mask};
use bertrt::{Device, Engine};
use common::*;
use serde_json::Value;

fn pipelines() -> Value {
    let p = fixtures().join("golden/pipelines.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn engine(name: &str) -> Engine {
    Engine::load_dir(&model_dir(name), Device::Cpu).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-5
}

fn fill_mask_case(model: &str) {
    let cases = pipelines();
    let eng = engine(model);
    let mut n = 0;
    for c in cases["fill_mask"].as_array().unwrap() {
        if c["model"] != model {
            continue;
        }
        n += 1;
        let text = c["text"].as_str().unwrap();
        let k = c["args"]["top_k"].as_u64().unwrap() as usize;
        let got = fill_mask::fill_mask(&eng, text, k).unwrap();
        // HF returns a flat list for one mask, a list per mask otherwise.
        let want: Vec<&Value> = if c["output"][0].is_array() {
            c["output"].as_array().unwrap().iter().collect()
        } else {
            vec![&c["output"]]
        };
        assert_eq!(got.len(), want.len(), "{model} {text:?}: number of masks");
        for (g_row, w_row) in got.iter().zip(want) {
            for (g, w) in g_row.iter().zip(w_row.as_array().unwrap()) {
                let ctx = format!("{model} {text:?}: got {g:?}, want {w}");
                assert_eq!(g.token as u64, w["token"].as_u64().unwrap(), "{ctx}");
                assert!(close(g.score as f64, w["score"].as_f64().unwrap()), "{ctx}");
                assert_eq!(g.token_str, w["token_str"].as_str().unwrap(), "{ctx}");
                assert_eq!(g.sequence, w["sequence"].as_str().unwrap(), "{ctx}");
            }
        }
    }
    assert!(n > 0, "no fill-mask goldens for {model}");
}

#[test]
fn fill_mask_bert() {
    fill_mask_case("bert_mlm");
}
#[test]
fn fill_mask_roberta() {
    fill_mask_case("roberta_mlm");
}
#[test]
fn fill_mask_albert() {
    fill_mask_case("albert_mlm");
}
#[test]
fn fill_mask_electra_generator() {
    fill_mask_case("electra_gen");
}

#[test]
fn fill_mask_without_mask_names_the_mask_token() {
    let eng = engine("roberta_mlm");
    let err = fill_mask::fill_mask(&eng, "no mask here", 5)
        .unwrap_err()
        .to_string();
    assert!(err.contains("<mask>"), "{err}");
    let eng = engine("bert_cls");
    let err = fill_mask::fill_mask(&eng, "a [MASK] b", 5)
        .unwrap_err()
        .to_string();
    assert!(err.contains("ForMaskedLM"), "{err}");
}

#[test]
fn text_classification_matches_pipeline() {
    let cases = pipelines();
    let mut n = 0;
    for c in cases["text_classification"].as_array().unwrap() {
        let eng = engine(c["model"].as_str().unwrap());
        let (text, pair) = match &c["input"] {
            Value::String(s) => (s.as_str(), None),
            o => (o["text"].as_str().unwrap(), o["text_pair"].as_str()),
        };
        let got = classify::classify(&eng, text, pair).unwrap();
        let want = c["output"].as_array().unwrap();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g.label, w["label"].as_str().unwrap(), "{c}");
            assert!(
                close(g.score as f64, w["score"].as_f64().unwrap()),
                "{g:?} vs {w}"
            );
        }
        n += 1;
    }
    assert!(n >= 8);
}

/// Each pooling against HF's outputs for the golden texts: cls = hidden
/// state of token 0, pooler = pooler_output, none = every token, mean = the
/// average over the sequence (sentence-transformers' mean pooling).
#[test]
fn embed_poolings_match_hf_outputs() {
    use bertrt::tasks::embed::{embed, EmbedOptions, Embedding, Pooling};
    let name = "bert_model_f16";
    let eng = engine(name);
    let meta: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join(format!("golden/{name}.json"))).unwrap(),
    )
    .unwrap();
    let texts: Vec<&str> = meta["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let g = load_golden(name);
    let (hs, mask, pooled) = (
        &g["last_hidden_state"],
        &g["attention_mask"],
        &g["pooler_output"],
    );
    let (l, h) = (hs.shape[1], hs.shape[2]);
    let row = |s: usize, t: usize| &hs.data[(s * l + t) * h..(s * l + t + 1) * h];
    for pooling in [Pooling::Cls, Pooling::Mean, Pooling::Pooler, Pooling::None] {
        let opts = EmbedOptions {
            pooling,
            normalize: false,
            max_seq_length: None,
            truncation: bertrt::tokenize::Truncation::Error,
        };
        let got = embed(&eng, &texts, &opts).unwrap();
        for (s, e) in got.iter().enumerate() {
            let n = (0..l).filter(|&t| mask.data[s * l + t] != 0.0).count();
            let want: Vec<f64> = match pooling {
                Pooling::Cls => row(s, 0).to_vec(),
                Pooling::Pooler => pooled.data[s * h..(s + 1) * h].to_vec(),
                Pooling::Mean => (0..h)
                    .map(|d| (0..n).map(|t| row(s, t)[d]).sum::<f64>() / n as f64)
                    .collect(),
                Pooling::None => (0..n).flat_map(|t| row(s, t).to_vec()).collect(),
            };
            let flat: Vec<f32> = match e {
                Embedding::Vector(v) => v.clone(),
                Embedding::Tokens(t) => t.concat(),
            };
            compare(&format!("{pooling:?} text {s}"), &flat, &want, 1e-4, 0.0).unwrap();
        }
    }
}

/// Replaced-token detection = sigmoid of ElectraForPreTraining's logits.
#[test]
fn detect_matches_discriminator_logits() {
    let name = "electra_disc";
    let eng = engine(name);
    let meta: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join(format!("golden/{name}.json"))).unwrap(),
    )
    .unwrap();
    let g = load_golden(name);
    let logits = &g["logits"];
    let l = logits.shape[1];
    for (s, text) in meta["texts"].as_array().unwrap().iter().enumerate() {
        let got = bertrt::tasks::detect::detect(&eng, text.as_str().unwrap()).unwrap();
        assert!(!got.is_empty());
        for t in &got {
            let want = 1.0 / (1.0 + (-logits.data[s * l + t.index]).exp());
            assert!(
                (t.probability as f64 - want).abs() < 1e-5,
                "{t:?} vs {want}"
            );
        }
    }
}

/// Every field HF returned, equal (scores within 1e-5), entity by entity.
fn assert_entities_match(ctx: &Value, got: Value, want: &Value) {
    let (got, want) = (got.as_array().unwrap(), want.as_array().unwrap());
    assert_eq!(got.len(), want.len(), "{ctx}\ngot {got:?}");
    for (g, w) in got.iter().zip(want) {
        for (key, wv) in w.as_object().unwrap() {
            let gv = &g[key];
            let ok = match key.as_str() {
                "score" => close(gv.as_f64().unwrap(), wv.as_f64().unwrap()),
                _ => gv == wv,
            };
            assert!(ok, "{key}: got {g} want {w}");
        }
    }
}

/// Token classification, aggregation "none" and "simple", as the pipeline.
#[test]
fn token_classification_matches_pipeline() {
    let cases = pipelines();
    let eng = engine("bert_tokcls");
    let mut counts = [0, 0];
    for c in cases["token_classification"].as_array().unwrap() {
        let text = c["text"].as_str().unwrap();
        let got = match c["args"]["aggregation_strategy"].as_str().unwrap() {
            "none" => {
                counts[0] += 1;
                serde_json::to_value(classify::classify_tokens(&eng, text, &["O"]).unwrap())
            }
            "simple" => {
                counts[1] += 1;
                serde_json::to_value(classify::classify_entities(&eng, text, &["O"]).unwrap())
            }
            other => panic!("no golden handling for aggregation {other}"),
        }
        .unwrap();
        assert_entities_match(c, got, &c["output"]);
    }
    assert!(counts[0] >= 3 && counts[1] >= 3, "{counts:?}");
}

/// fill-mask refuses a model without an MLM head before anything else: the
/// text here has no mask token either, and the head is what gets named.
#[test]
fn fill_mask_names_the_missing_head_first() {
    let eng = engine("bert_cls");
    let err = fill_mask::fill_mask(&eng, "no mask in this text", 3)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("has no MLM head") && err.contains("BertForSequenceClassification"),
        "{err}"
    );
}

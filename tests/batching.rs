//! A packed batch gives the per-sequence results: attention never mixes
//! sequences and no padding exists to leak.

mod common;

use bertrt::tasks::embed::{embed, EmbedOptions, Embedding, Pooling};
use bertrt::tokenize::Truncation;
use bertrt::{Device, Engine};

const TEXTS: &[&str] = &[
    "Hello",
    "The cat sat on the mat and looked at the lake.",
    "a",
    "Paris is the capital of France, and Berlin is the capital of Germany; both are old cities.",
    "Café naïve résumé 北京",
];

fn check(model: &str) {
    let eng = Engine::load_dir(&common::model_dir(model), Device::Cpu).unwrap();
    let opts = EmbedOptions {
        pooling: Pooling::None,
        normalize: false,
        max_seq_length: None,
        truncation: Truncation::LongestFirst,
    };
    let batched = embed(&eng, TEXTS, &opts).unwrap();
    let mut max_err = 0f32;
    for (i, t) in TEXTS.iter().enumerate() {
        let single = embed(&eng, &[t], &opts).unwrap().remove(0);
        let (Embedding::Tokens(a), Embedding::Tokens(b)) = (&batched[i], &single) else {
            panic!("per-token output expected")
        };
        assert_eq!(a.len(), b.len(), "{model} text {i}: token count");
        for (ra, rb) in a.iter().zip(b) {
            for (x, y) in ra.iter().zip(rb) {
                max_err = max_err.max((x - y).abs());
            }
        }
    }
    eprintln!("{model}: batch vs single max |diff| {max_err:e}");
    // The GEMM may block differently for different row counts; anything
    // beyond float rounding would mean sequences interact.
    assert!(
        max_err <= 1e-6,
        "{model}: batch differs from single by {max_err}"
    );
}

#[test]
fn bert_batch_equals_single() {
    check("bert_mlm");
}
#[test]
fn roberta_batch_equals_single() {
    check("roberta_mlm");
}
#[test]
fn electra_batch_equals_single() {
    check("electra_disc");
}

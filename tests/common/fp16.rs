//! Comparing an fp16 backend's forward pass with the f32 CPU engine.

use bertrt::backend::cpu::CpuEngine;
use bertrt::batch::{Batch, SequenceIds};
use bertrt::config::ModelConfig;
use bertrt::model::ModelWeights;
use bertrt::output::{ForwardOutput, HeadOutput};

pub fn weights(dir: &std::path::Path) -> ModelWeights {
    bertrt::model::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .0
}

/// Mixed lengths in one packed batch, including a one-token sequence and
/// lengths that are not multiples of 8.
pub fn awkward_batch(cfg: &ModelConfig) -> Batch {
    Batch::pack(&awkward_sequences(cfg), cfg).unwrap()
}

/// The sequences of [`awkward_batch`], in order.
pub fn awkward_sequences(cfg: &ModelConfig) -> Vec<SequenceIds> {
    let max = cfg.max_tokens_per_sequence();
    let lens = [1usize, 7, 13.min(max), max.min(33), max];
    let mut state = 0x9e3779b97f4a7c15u64;
    lens.iter()
        .map(|&n| {
            let ids = (0..n)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state % cfg.vocab_size as u64) as u32
                })
                .collect();
            let types = (0..n)
                .map(|i| {
                    if cfg.type_vocab_size > 1 && i > n / 2 {
                        1
                    } else {
                        0
                    }
                })
                .collect();
            SequenceIds {
                input_ids: ids,
                token_type_ids: types,
            }
        })
        .collect()
}

/// The fp16 forward against the CPU engine. Measured in fp16_emulated:
/// worst per-token cosine 0.99999+, max |err| ~3e-3 on the tiny fixtures
/// (fp16 rounding of activations); asserted with margin.
pub const MIN_COS: f64 = 0.9999;
pub const ATOL: f32 = 2e-2;

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-30)
}

/// Per-row cosine >= `min_cos` and max |err| <= `atol`; returns (worst cosine, max err).
pub fn compare_rows(
    what: &str,
    got: &[f32],
    want: &[f32],
    width: usize,
    min_cos: f64,
    atol: f32,
) -> (f64, f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let mut worst = 1f64;
    let mut max_err = 0f32;
    for (r, (g, w)) in got.chunks(width).zip(want.chunks(width)).enumerate() {
        let c = cosine(g, w);
        worst = worst.min(c);
        for (x, y) in g.iter().zip(w) {
            max_err = max_err.max((x - y).abs());
        }
        assert!(
            c >= min_cos,
            "{what} row {r}: cosine {c} < {min_cos}\n got {:?}\n want {:?}",
            &g[..g.len().min(6)],
            &w[..w.len().min(6)]
        );
    }
    assert!(max_err <= atol, "{what}: max |err| {max_err} > {atol}");
    (worst, max_err)
}

/// Compares every output of an fp16 forward with the CPU engine's.
pub fn compare_forward(
    name: &str,
    w: &ModelWeights,
    batch: &Batch,
    got: &ForwardOutput,
    min_cos: f64,
    atol: f32,
) {
    let cpu = CpuEngine::new(w.clone()).forward(batch).unwrap();
    let h = w.config.hidden_size;
    let (c, e) = compare_rows(
        &format!("{name} hidden"),
        &got.hidden,
        &cpu.hidden,
        h,
        min_cos,
        atol,
    );
    super::record::figure(&format!(
        "{name}: hidden states worst cosine {c:.6}, max |err| {e:.2e}"
    ));
    match (&got.pooled, &cpu.pooled) {
        (Some(a), Some(b)) => {
            compare_rows(&format!("{name} pooled"), a, b, h, min_cos, atol);
        }
        (None, None) => {}
        (a, b) => panic!(
            "{name}: pooled output on one side only (fp16: {}, cpu: {})",
            if a.is_some() { "some" } else { "none" },
            if b.is_some() { "some" } else { "none" }
        ),
    }
    let logits = |o: &HeadOutput| -> Vec<f32> {
        match o {
            HeadOutput::None => vec![],
            HeadOutput::TokenLogits(x) | HeadOutput::SequenceLogits(x) => x.clone(),
            HeadOutput::StartEnd { start, end } => [start.clone(), end.clone()].concat(),
            HeadOutput::PreTraining { mlm, sop } => [mlm.clone(), sop.clone()].concat(),
        }
    };
    let (a, b) = (logits(&got.head), logits(&cpu.head));
    assert_eq!(a.len(), b.len(), "{name}: head output sizes");
    if !a.is_empty() {
        let err = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        super::record::figure(&format!(
            "{name}: head outputs max |err| {err:.2e}, cosine {:.6}",
            cosine(&a, &b)
        ));
        assert!(
            cosine(&a, &b) >= min_cos && err <= atol,
            "{name}: head outputs differ: max |err| {err}"
        );
    }
}

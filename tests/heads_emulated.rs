//! Heads on the device: the fp16 forward asked for only what a task needs
//! ([`Want`]) computes and copies back only that, and gives what the full
//! forward gives reduced on the host (`bertrt::output::reduce`), under the
//! SIMT emulation.

mod common;

use bertrt::backend::emu::EmuSeam;
use bertrt::backend::fp16::Fp16Model;
use bertrt::batch::Batch;
use bertrt::output::{reduce, ForwardOutput, HeadOutput, Want, Wanted};
use bertrt::tasks::embed::Pooling;
use common::fp16::*;
use std::sync::atomic::Ordering;

/// The fp16 tolerance of tests/fp16_emulated.rs (fp16 against the f32 CPU
/// engine); a reduction of the same fp16 forward differs far less (f32
/// against f64 sums; the recorded figures say how much).
const MIN_COS: f64 = 0.9999;
const ATOL: f32 = 2e-2;

fn head_values(h: &HeadOutput) -> Vec<f32> {
    match h {
        HeadOutput::None => vec![],
        HeadOutput::TokenLogits(x) | HeadOutput::SequenceLogits(x) => x.clone(),
        HeadOutput::StartEnd { start, end } => [start.clone(), end.clone()].concat(),
        HeadOutput::PreTraining { mlm, sop } => [mlm.clone(), sop.clone()].concat(),
    }
}

/// Token rows in an awkward order: the last, the first, a repeat.
fn some_rows(t: usize) -> Vec<usize> {
    vec![t - 1, 0, 5, 5, t / 2]
}

fn compare(name: &str, want: &Want, got: &[f32], reference: &[f32], width: usize) {
    let (c, e) = compare_rows(
        &format!("{name} {want:?}"),
        got,
        reference,
        width,
        MIN_COS,
        ATOL,
    );
    common::record::figure(&format!(
        "{name} {want:?}: worst cosine {c:.7}, max |err| {e:.2e} against the full forward reduced"
    ));
}

/// Every reduction of one model against the full forward reduced on the host.
fn check(name: &str) {
    let w = weights(&common::model_dir(name));
    let cfg = &w.config;
    let batch = awkward_batch(cfg);
    let t = batch.num_tokens();
    let model = Fp16Model::new(EmuSeam::new(), &w).unwrap();
    let full = model.forward(&batch).unwrap();
    let host = |want: &Want| reduce(full.clone(), &batch, want);

    // The head alone: the very launches of the full forward, so equal bits.
    let head = model.forward_want(&batch, &Want::Head).unwrap();
    let head = head_values(&head.into_head().unwrap());
    assert_eq!(head, head_values(&full.head), "{name}: Want::Head");

    let rows = Want::TokenLogitsAt(some_rows(t));
    match (model.forward_want(&batch, &rows), host(&rows)) {
        (Ok(got), Ok(reference)) => {
            let (got, reference) = (
                got.into_token_logits().unwrap(),
                reference.into_token_logits().unwrap(),
            );
            compare(name, &rows, &got, &reference, reference.len() / 5);
        }
        (Err(a), Err(b)) => assert!(
            a.to_string().contains("no per-token logits")
                && b.to_string().contains("no per-token logits"),
            "{name}: {a} / {b}"
        ),
        (a, b) => panic!("{name}: {rows:?}: device {a:?}, host {b:?}"),
    }

    for pooling in [Pooling::Cls, Pooling::Mean, Pooling::Pooler, Pooling::None] {
        for normalize in [false, true] {
            let want = Want::Embeddings { pooling, normalize };
            match (model.forward_want(&batch, &want), host(&want)) {
                (Ok(got), Ok(reference)) => compare(
                    name,
                    &want,
                    &got.into_embeddings().unwrap(),
                    &reference.into_embeddings().unwrap(),
                    cfg.hidden_size,
                ),
                (Err(a), Err(b)) => assert!(
                    full.pooled.is_none() && a.to_string() == b.to_string(),
                    "{name}: {want:?}: {a} / {b}"
                ),
                (a, b) => panic!("{name}: {want:?}: device {a:?}, host {b:?}"),
            }
        }
    }
}

/// Every model folder in tests/fixtures/models (every family and head).
#[test]
fn every_want_equals_the_full_forward_reduced() {
    common::for_each_fixture_model(check);
}

/// A model on an emulated seam whose device -> host bytes are counted (the
/// closure returns the count since its last call), its awkward batch and H.
fn counted(name: &str) -> (Fp16Model<EmuSeam>, impl Fn() -> usize, Batch, usize) {
    let w = weights(&common::model_dir(name));
    let seam = EmuSeam::new();
    let counter = seam.download_counter();
    let batch = awkward_batch(&w.config);
    let model = Fp16Model::new(seam, &w).unwrap();
    let h = w.config.hidden_size;
    (model, move || counter.swap(0, Ordering::Relaxed), batch, h)
}

fn full_bytes(out: &ForwardOutput) -> usize {
    let pooled = out.pooled.as_ref().map_or(0, |p| p.len());
    2 * (out.hidden.len() + pooled + head_values(&out.head).len())
}

/// fill-mask reads back masks x vocab halves, not tokens x vocab.
#[test]
fn fill_mask_reads_back_masks_times_vocab() {
    let (model, downloaded, batch, _) = counted("bert_mlm");
    let t = batch.num_tokens();
    let full = model.forward(&batch).unwrap();
    let vocab = head_values(&full.head).len() / t;
    assert!(vocab > 1, "bert_mlm: vocabulary {vocab}");
    assert_eq!(downloaded(), full_bytes(&full), "the full forward");
    let masks = vec![3, t - 1, 8];
    model
        .forward_want(&batch, &Want::TokenLogitsAt(masks.clone()))
        .unwrap();
    assert_eq!(
        downloaded(),
        masks.len() * vocab * 2,
        "fill-mask: {} masks x vocab {vocab} halves (the batch has {t} tokens)",
        masks.len()
    );
}

/// QA, detect and classify read their head's output alone (no hidden
/// states); embed reads [seqs, H] f32.
#[test]
fn other_tasks_read_back_their_head_or_pooled_rows_alone() {
    let (model, downloaded, batch, _) = counted("bert_qa");
    model.forward_want(&batch, &Want::Head).unwrap();
    let t = batch.num_tokens();
    assert_eq!(
        downloaded(),
        t * 2 * 2,
        "QA: start and end, one half each per token"
    );

    let (model, downloaded, batch, _) = counted("electra_disc");
    model.forward_want(&batch, &Want::Head).unwrap();
    assert_eq!(
        downloaded(),
        batch.num_tokens() * 2,
        "detect: one half per token"
    );

    let (model, downloaded, batch, _) = counted("bert_cls");
    let s = batch.num_seqs();
    let labels = match model.forward_want(&batch, &Want::Head).unwrap() {
        Wanted::Head(HeadOutput::SequenceLogits(l)) => l.len() / s,
        other => panic!("bert_cls: {other:?}"),
    };
    assert_eq!(downloaded(), s * labels * 2, "classify: the logits alone");

    let (model, downloaded, batch, h) = counted("xlmr_model");
    for pooling in [Pooling::Cls, Pooling::Mean] {
        let want = Want::Embeddings {
            pooling,
            normalize: true,
        };
        model.forward_want(&batch, &want).unwrap();
        let s = batch.num_seqs();
        assert_eq!(downloaded(), s * h * 4, "{want:?}: [seqs, H] f32");
    }
}

//! Heads on the device: the fp16 forward asked for only what a task needs
//! ([`Want`]) computes and copies back only that, and gives what the full
//! forward gives reduced on the host (`bertrt::output::reduce`), under the
//! SIMT emulation.

mod common;

use bertrt::backend::emu::EmuSeam;
use bertrt::backend::fp16::Fp16Model;
use bertrt::batch::Batch;
use bertrt::output::{ForwardOutput, HeadOutput, Want, Wanted};
use bertrt::tasks::embed::Pooling;
use common::fp16::*;
use common::wants::{check_wants, head_values};

/// The fp16 tolerance of tests/fp16_emulated.rs (fp16 against the f32 CPU
/// engine). Measured here (2026-12-02): every reduction within 6e-8 of the
/// full forward reduced on the host (f32 against f64 sums), the gathered
/// token rows bit-equal.
const MIN_COS: f64 = 0.9999;
const ATOL: f32 = 2e-2;

/// Every model folder in tests/fixtures/models (every family and head).
#[test]
fn every_want_equals_the_full_forward_reduced() {
    common::for_each_fixture_model(|name| {
        let w = weights(&common::model_dir(name));
        let batch = awkward_batch(&w.config);
        let model = || Fp16Model::new(EmuSeam::new(), &w).unwrap();
        check_wants(name, &w, model, &batch, MIN_COS, ATOL);
    });
}

/// A model on an emulated seam, a counter of its device -> host bytes, its
/// awkward batch and H.
fn counted(name: &str) -> (Fp16Model<EmuSeam>, Downloads, Batch, usize) {
    let w = weights(&common::model_dir(name));
    let batch = awkward_batch(&w.config);
    let model = Fp16Model::new(EmuSeam::new(), &w).unwrap();
    let start = Downloads(std::cell::Cell::new(model.traffic().download_bytes));
    (model, start, batch, w.config.hidden_size)
}

/// The seam's device -> host byte count at the last look.
struct Downloads(std::cell::Cell<u64>);

impl Downloads {
    /// Bytes read back since the last call.
    fn since(&self, model: &Fp16Model<EmuSeam>) -> usize {
        let now = model.traffic().download_bytes;
        (now - self.0.replace(now)) as usize
    }
}

fn full_bytes(out: &ForwardOutput) -> usize {
    let pooled = out.pooled.as_ref().map_or(0, |p| p.len());
    2 * (out.hidden.len() + pooled + head_values(&out.head).len())
}

/// fill-mask reads back masks x vocab halves, not tokens x vocab, and its
/// mask rows go up with the inputs: one upload and one wait, as for every
/// other forward.
#[test]
fn fill_mask_reads_back_masks_times_vocab() {
    let (model, downloaded, batch, _) = counted("bert_mlm");
    let t = batch.num_tokens();
    let before = model.traffic();
    let full = model.forward(&batch).unwrap();
    let full_up = model.traffic().since(&before).upload_bytes;
    let vocab = head_values(&full.head).len() / t;
    assert!(vocab > 1, "bert_mlm: vocabulary {vocab}");
    assert_eq!(
        downloaded.since(&model),
        full_bytes(&full),
        "the full forward"
    );
    let masks = vec![3, t - 1, 8];
    let before = model.traffic();
    model
        .forward_want(&batch, &Want::TokenLogitsAt(masks.clone()))
        .unwrap();
    let d = model.traffic().since(&before);
    assert_eq!(d.uploads, 1, "fill-mask: uploads {d:?}");
    assert_eq!(d.syncs, 1, "fill-mask: host waits {d:?}");
    assert_eq!(
        d.upload_bytes,
        full_up + 4 * masks.len() as u64,
        "fill-mask: the full forward's inputs and one u32 per mask row"
    );
    assert_eq!(
        downloaded.since(&model),
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
        downloaded.since(&model),
        t * 2 * 2,
        "QA: start and end, one half each per token"
    );

    let (model, downloaded, batch, _) = counted("electra_disc");
    model.forward_want(&batch, &Want::Head).unwrap();
    assert_eq!(
        downloaded.since(&model),
        batch.num_tokens() * 2,
        "detect: one half per token"
    );

    let (model, downloaded, batch, _) = counted("bert_cls");
    let s = batch.num_seqs();
    let labels = match model.forward_want(&batch, &Want::Head).unwrap() {
        Wanted::Head(HeadOutput::SequenceLogits(l)) => l.len() / s,
        other => panic!("bert_cls: {other:?}"),
    };
    assert_eq!(
        downloaded.since(&model),
        s * labels * 2,
        "classify: the logits alone"
    );

    let (model, downloaded, batch, h) = counted("xlmr_model");
    for pooling in [Pooling::Cls, Pooling::Mean] {
        let want = Want::Embeddings {
            pooling,
            normalize: true,
        };
        model.forward_want(&batch, &want).unwrap();
        let s = batch.num_seqs();
        assert_eq!(
            downloaded.since(&model),
            s * h * 4,
            "{want:?}: [seqs, H] f32"
        );
    }
}

//! Heads on the device, for any launch seam: an fp16 model asked for only
//! what a task needs ([`Want`]) gives what its full forward gives reduced on
//! the host (`bertrt::output::reduce`).

use super::fp16::compare_rows;
use bertrt::backend::fp16::{Fp16Model, Seam};
use bertrt::batch::Batch;
use bertrt::model::ModelWeights;
use bertrt::output::{reduce, HeadOutput, Want};
use bertrt::tasks::embed::Pooling;

/// A head output's values, in one list.
pub fn head_values(h: &HeadOutput) -> Vec<f32> {
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

fn compare(
    name: &str,
    want: &Want,
    got: &[f32],
    reference: &[f32],
    width: usize,
    (min_cos, atol): (f64, f32),
) {
    let (c, e) = compare_rows(
        &format!("{name} {want:?}"),
        got,
        reference,
        width,
        min_cos,
        atol,
    );
    super::record::figure(&format!(
        "{name} {want:?}: worst cosine {c:.7}, max |err| {e:.2e} against the full forward reduced"
    ));
}

/// Every reduction of the fp16 model of `w` (made by `model`) on `batch`
/// against its full forward reduced on the host: `Want::Head` bit for bit
/// (the same launches), the rest within `min_cos`/`atol`. Each want runs on a
/// fresh model, so no buffer left by an earlier forward can stand in for one
/// the want forgot to compute.
pub fn check_wants<S: Seam>(
    name: &str,
    w: &ModelWeights,
    model: impl Fn() -> Fp16Model<S>,
    batch: &Batch,
    min_cos: f64,
    atol: f32,
) {
    let cfg = &w.config;
    let t = batch.num_tokens();
    let full = model().forward(batch).unwrap();
    let host = |want: &Want| reduce(full.clone(), batch, want);

    // The head alone: the very launches of the full forward, so equal bits.
    let head = model().forward_want(batch, &Want::Head).unwrap();
    let head = head_values(&head.into_head().unwrap());
    assert_eq!(head, head_values(&full.head), "{name}: Want::Head");

    let rows = Want::TokenLogitsAt(some_rows(t));
    match (model().forward_want(batch, &rows), host(&rows)) {
        (Ok(got), Ok(reference)) => {
            let (got, reference) = (
                got.into_token_logits().unwrap(),
                reference.into_token_logits().unwrap(),
            );
            compare(
                name,
                &rows,
                &got,
                &reference,
                reference.len() / 5,
                (min_cos, atol),
            );
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
            match (model().forward_want(batch, &want), host(&want)) {
                (Ok(got), Ok(reference)) => compare(
                    name,
                    &want,
                    &got.into_embeddings().unwrap(),
                    &reference.into_embeddings().unwrap(),
                    cfg.hidden_size,
                    (min_cos, atol),
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

//! The host side of the fp16 path under emulation: one staging upload and one
//! wait per forward, and CUDA graphs (the emulated seam records the launch
//! list during capture and replays it) against eager forwards.

mod common;

use bertrt::backend::emu::EmuSeam;
use bertrt::backend::fp16::staging::Bucket;
use bertrt::backend::fp16::Fp16Model;
use bertrt::batch::{Batch, SequenceIds};
use bertrt::model::ModelWeights;
use bertrt::output::{ForwardOutput, HeadOutput};
use common::fp16::*;

/// Sequences of these lengths, ids drawn from `seed`.
fn batch(w: &ModelWeights, lens: &[usize], seed: u64) -> Batch {
    let cfg = &w.config;
    let mut state = seed | 1;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let seqs: Vec<SequenceIds> = lens
        .iter()
        .map(|&n| SequenceIds {
            input_ids: (0..n)
                .map(|_| (next() % cfg.vocab_size as u64) as u32)
                .collect(),
            token_type_ids: (0..n)
                .map(|i| (i >= n / 2 && cfg.type_vocab_size > 1) as u32)
                .collect(),
        })
        .collect();
    Batch::pack(&seqs, cfg).unwrap()
}

/// Every output as one list of f32 bit patterns.
fn bits(o: &ForwardOutput) -> Vec<u32> {
    let head: Vec<f32> = match &o.head {
        HeadOutput::None => vec![],
        HeadOutput::TokenLogits(x) | HeadOutput::SequenceLogits(x) => x.clone(),
        HeadOutput::StartEnd { start, end } => [start.clone(), end.clone()].concat(),
        HeadOutput::PreTraining { mlm, sop } => [mlm.clone(), sop.clone()].concat(),
    };
    o.hidden
        .iter()
        .chain(o.pooled.iter().flatten())
        .chain(&head)
        .map(|v| v.to_bits())
        .collect()
}

/// A BERT with random weights whose head size has a tensor-core attention
/// instance (32), so the bucket's spare attention tiles are exercised.
fn tc_model() -> ModelWeights {
    let cfg = bertrt::config::ModelConfig::from_json_str(
        r#"{"model_type":"bert","hidden_size":64,"num_attention_heads":2,"num_hidden_layers":2,
        "intermediate_size":128,"max_position_embeddings":96,"vocab_size":200,"type_vocab_size":2}"#,
        std::path::Path::new("inline"),
    )
    .unwrap();
    let mut w = bertrt::model::random_weights(&cfg, 11).unwrap();
    for a in &mut w.attention {
        a.qkv.w.iter_mut().for_each(|v| *v *= 6.0);
        a.out.w.iter_mut().for_each(|v| *v *= 6.0);
    }
    w
}

/// For `w`: the graph replay of each batch equals the eager forward of the
/// same bucket-padded batch bit for bit, the unpadded eager forward and the
/// CPU engine within the fp16 tolerance; batches of one bucket share one
/// capture, and another bucket captures again.
fn check_graphs(name: &str, w: &ModelWeights, same_bucket: [&[usize]; 2], other: &[usize]) {
    let graphs = Fp16Model::new(EmuSeam::new(), w).unwrap();
    let eager = Fp16Model::new(EmuSeam::new(), w).unwrap();
    eager.set_graphs(false);
    let (a, b) = (batch(w, same_bucket[0], 1), batch(w, same_bucket[1], 2));
    let bucket = |x: &Batch| Bucket::of(x.num_tokens(), x.num_seqs()).unwrap();
    assert_eq!(bucket(&a), bucket(&b), "{name}: the test's batches");
    assert_ne!(
        (a.num_tokens(), a.num_seqs()),
        (b.num_tokens(), b.num_seqs()),
        "{name}: the test's batches"
    );
    let c = batch(w, other, 3);
    assert_ne!(bucket(&a), bucket(&c), "{name}: the test's batches");

    let h = w.config.hidden_size;
    for (i, (x, captures)) in [(&a, 1), (&b, 1), (&c, 2), (&a, 2)].into_iter().enumerate() {
        let what = format!(
            "{name} batch {i} ({} tokens in {} sequences, bucket {:?})",
            x.num_tokens(),
            x.num_seqs(),
            bucket(x)
        );
        let replayed = graphs.forward(x).unwrap();
        assert_eq!(
            graphs.graph_counts(),
            (captures, i + 1),
            "{what}: (captures, replays)"
        );
        let padded = eager.forward_padded_eager(x).unwrap();
        assert!(
            bits(&replayed) == bits(&padded),
            "{what}: the replay differs from the eager forward of the padded batch"
        );
        let unpadded = eager.forward(x).unwrap();
        compare_rows(
            &format!("{what}: replay vs unpadded eager, hidden"),
            &replayed.hidden,
            &unpadded.hidden,
            h,
            MIN_COS,
            ATOL,
        );
        compare_forward(&what, w, x, &replayed, MIN_COS, ATOL);
    }
    assert_eq!(eager.graph_counts(), (0, 0), "{name}: graphs turned off");
}

#[test]
fn graph_replays_match_eager_forwards_on_a_fixture() {
    // bert_cls: pooler and classifier (attention.cu: head size 8).
    let w = weights(&common::model_dir("bert_cls"));
    check_graphs("bert_cls", &w, [&[5, 9, 3], &[7, 12]], &[20, 20, 4]);
}

#[test]
fn graph_replays_match_eager_forwards_with_tensor_core_attention() {
    let w = tc_model();
    // 33 tokens -> bucket 64 tokens; 45 -> 64 too, with other sequences.
    check_graphs("bert d32", &w, [&[17, 1, 15], &[40, 5]], &[3, 4]);
}

/// A forward makes exactly one upload (every input, packed) and one wait,
/// eager or replayed, and reads back what it returns.
#[test]
fn a_forward_makes_one_upload_and_one_wait() {
    let w = weights(&common::model_dir("bert_cls"));
    let cfg = &w.config;
    let x = batch(&w, &[6, 11, 2], 4);
    let (t, s) = (x.num_tokens(), x.num_seqs());
    for graphs in [false, true] {
        let model = Fp16Model::new(EmuSeam::new(), &w).unwrap();
        model.set_graphs(graphs);
        // The first forward sizes the workspace (and captures).
        let first = model.forward(&x).unwrap();
        for round in 0..2 {
            let before = model.traffic();
            let out = model.forward(&x).unwrap();
            let d = model.traffic().since(&before);
            let what = format!("graphs {graphs}, forward {round}");
            assert_eq!(d.uploads, 1, "{what}: uploads {d:?}");
            assert_eq!(d.syncs, 1, "{what}: host waits {d:?}");
            // ids, positions, types, cu_seqlens (+ the trash bound), first
            // rows, attention tiles: u32 each, at the launched sizes.
            let (lt, ls) = match graphs {
                true => {
                    let b = Bucket::of(t, s).unwrap();
                    (b.tokens, b.seqs)
                }
                false => (t, s),
            };
            let words = 3 * lt
                + (ls + 2)
                + ls
                + 2 * bertrt::backend::kernels::attention_tc_max_tiles(lt, ls);
            assert_eq!(d.upload_bytes, 4 * words as u64, "{what}: bytes up");
            // Hidden states, pooler output, classifier logits: fp16.
            let values = t * cfg.hidden_size + s * cfg.hidden_size + s * cfg.num_labels;
            assert_eq!(d.downloads, 3, "{what}: readbacks {d:?}");
            assert_eq!(d.download_bytes, 2 * values as u64, "{what}: bytes down");
            assert!(bits(&out) == bits(&first), "{what}: a repeat differs");
        }
    }
}

//! CUDA graphs against eager forwards, on any seam (emulated in
//! tests/cuda_graphs_emulated.rs, CUDA in tests/gpu.rs).

use super::fp16::*;
use bertrt::backend::fp16::staging::Bucket;
use bertrt::backend::fp16::{Fp16Model, Seam};
use bertrt::batch::{Batch, SequenceIds};
use bertrt::model::ModelWeights;
use bertrt::output::{ForwardOutput, HeadOutput};

/// Sequences of these lengths, ids drawn from `seed`.
pub fn batch(w: &ModelWeights, lens: &[usize], seed: u64) -> Batch {
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
pub fn bits(o: &ForwardOutput) -> Vec<u32> {
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
pub fn tc_model() -> ModelWeights {
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
pub fn check_graphs<S: Seam>(
    name: &str,
    w: &ModelWeights,
    open: impl Fn() -> S,
    same_bucket: [&[usize]; 2],
    other: &[usize],
) {
    let graphs = Fp16Model::new(open(), w).unwrap();
    let eager = Fp16Model::new(open(), w).unwrap();
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

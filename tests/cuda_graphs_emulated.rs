//! The host side of the fp16 path under emulation: one staging upload and one
//! wait per forward, and CUDA graphs (the emulated seam records the launch
//! list during capture and replays it) against eager forwards.

mod common;

use bertrt::backend::emu::EmuSeam;
use bertrt::backend::fp16::staging::Bucket;
use bertrt::backend::fp16::Fp16Model;
use bertrt::output::Want;
use common::fp16::*;
use common::graphs::*;
use common::wants::head_values;

#[test]
fn graph_replays_match_eager_forwards_on_a_fixture() {
    // bert_cls: pooler and classifier (attention.cu: head size 8).
    let w = weights(&common::model_dir("bert_cls"));
    check_graphs(
        "bert_cls",
        &w,
        EmuSeam::new,
        [&[5, 9, 3], &[7, 12]],
        &[20, 20, 4],
    );
}

#[test]
fn graph_replays_match_eager_forwards_with_tensor_core_attention() {
    let w = tc_model();
    // 33 tokens -> bucket 64 tokens; 45 -> 64 too, with other sequences.
    check_graphs(
        "bert d32",
        &w,
        EmuSeam::new,
        [&[17, 1, 15], &[40, 5]],
        &[3, 4],
    );
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

/// fill-mask on a replayed graph: the mask rows go up in the forward's one
/// upload and the gather after the replay reads them from device memory, so
/// each want in the bucket gets its own rows (other ones, another count),
/// bit for bit the full forward's logits at those rows.
#[test]
fn fill_mask_rows_go_up_per_forward_under_graphs() {
    let w = weights(&common::model_dir("bert_mlm"));
    let x = batch(&w, &[6, 11, 2], 4);
    let t = x.num_tokens();
    let model = Fp16Model::new(EmuSeam::new(), &w).unwrap();
    let logits = head_values(&model.forward(&x).unwrap().head);
    let vocab = logits.len() / t;
    assert!(vocab > 1, "bert_mlm: vocabulary {vocab}");
    for rows in [vec![3, t - 1, 8], vec![0, 5], vec![t - 2]] {
        let before = model.traffic();
        let got = model
            .forward_want(&x, &Want::TokenLogitsAt(rows.clone()))
            .unwrap()
            .into_token_logits()
            .unwrap();
        let d = model.traffic().since(&before);
        assert_eq!((d.uploads, d.syncs), (1, 1), "rows {rows:?}: {d:?}");
        let expected: Vec<u32> = rows
            .iter()
            .flat_map(|&r| &logits[r * vocab..][..vocab])
            .map(|v| v.to_bits())
            .collect();
        let got: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
        assert!(
            got == expected,
            "rows {rows:?}: not the full forward's rows"
        );
    }
    assert_eq!(
        model.graph_counts(),
        (1, 4),
        "one capture, every forward replayed"
    );
}

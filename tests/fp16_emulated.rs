//! The whole fp16 forward pass (Fp16Model: the same launches, params structs
//! and geometry as on the GPU) run through the SIMT emulation seam, against
//! the f32 CPU engine, for every family and head.

mod common;

use bertrt::backend::emu::EmuSeam;
use bertrt::backend::fp16::Fp16Model;
use common::fp16::*;

/// Measured here: worst per-token cosine 0.99999+, max |err| ~3e-3 on the
/// tiny fixtures (fp16 rounding of activations); asserted with margin.
const MIN_COS: f64 = 0.9999;
const ATOL: f32 = 2e-2;

fn check(name: &str) {
    let w = weights(&common::model_dir(name));
    let batch = awkward_batch(&w.config);
    let model = Fp16Model::new(EmuSeam::new(), &w).unwrap();
    let out = model.forward(&batch).unwrap();
    compare_forward(name, &w, &batch, &out, MIN_COS, ATOL);
    // The workspace is reused: a second, smaller batch gives the same rows.
    let again = model.forward(&batch).unwrap();
    assert_eq!(out.hidden, again.hidden, "{name}: second run differs");
}

macro_rules! emulated {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            check(stringify!($name));
        }
    )*};
}

emulated!(
    bert_mlm,
    bert_model_f16,
    bert_cls,
    bert_tokcls,
    bert_qa,
    roberta_mlm,
    roberta_cls,
    xlmr_model,
    albert_mlm,
    albert_pretrain,
    albert_cls,
    albert_share_attention,
    albert_share_ffn,
    electra_disc,
    electra_gen,
    electra_cls,
);

/// Out of device memory is an error that says how much was needed and what
/// would fit, and the model keeps working with a batch that fits.
#[test]
fn out_of_memory_names_sizes_and_recovers() {
    let w = weights(&common::model_dir("bert_mlm"));
    let probe = Fp16Model::new(EmuSeam::new(), &w).unwrap();
    let weights_bytes = probe.weight_bytes;
    // Room for the weights and a workspace of about 128 tokens, not 4096.
    let limit = weights_bytes + 64 * 1024 + probe.workspace_bytes(128, 8);
    let model = Fp16Model::new(EmuSeam::with_memory_limit(limit), &w).unwrap();
    let cfg = &w.config;
    let seq = |n: usize| bertrt::batch::SequenceIds {
        input_ids: vec![5; n],
        token_type_ids: vec![],
    };
    let big: Vec<_> = (0..64).map(|_| seq(64)).collect();
    let err = model
        .forward(&bertrt::batch::Batch::pack(&big, cfg).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot allocate") && err.contains("4096 tokens") && err.contains("would fit"),
        "{err}"
    );
    let small = bertrt::batch::Batch::pack(&[seq(10), seq(3)], cfg).unwrap();
    model.forward(&small).unwrap();
}

/// Every kernel and the GEMM through the emulated launch seam.
#[test]
fn kernels_through_the_emulated_seam() {
    for line in common::seam_kernels::check_all_kernels(&EmuSeam::new()) {
        common::record::figure(&line);
    }
}

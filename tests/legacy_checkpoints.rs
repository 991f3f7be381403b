//! Checkpoints as pre-2020 hub uploads have them: `torch.save`'s legacy
//! (pre-1.6, non-zip) format, as one file and as two shards plus
//! `pytorch_model.bin.index.json`, and folders with only TensorFlow or Flax
//! weights. The fixture folders are written with real torch by
//! `scripts/gen_fixtures.py --only-legacy`; their goldens are HF's outputs
//! from the same folders.

mod common;

use bertrt::backend::cpu::CpuEngine;
use bertrt::backend::emu::EmuSeam;
use bertrt::backend::fp16::Fp16Model;
use bertrt::config::ModelConfig;
use bertrt::model::load_weights;
use bertrt::output::{ForwardOutput, HeadOutput};
use bertrt::weights::{DType, WeightFormat, WeightStore};
use common::fp16::cosine;
use common::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// f32 CPU engine vs HF in f32, as in tests/golden_models.rs. The f16
/// checkpoint is compared the same way: HF and the CPU engine both widen its
/// f16 weights to f32 exactly, so only f32 arithmetic differs.
const CPU_ATOL: f64 = 1e-4;

/// The fp16 path (f16 weights and activations, f32 accumulation) against HF's
/// f32 outputs. Measured on these fixtures: worst per-token cosine 0.999999,
/// max |err| 5.1e-3 (bert_legacy hidden states), where |x| reaches 3.7-4.3:
/// about 2.6 f16 ulps (2^-9 = 2.0e-3 on [2, 4)), the rounding of each layer's
/// activations. Bound: 1e-2, 5 ulps on [2, 4); a misread weight (a view at the
/// wrong offset, a tensor from the wrong storage) moves outputs by O(1).
const FP16_MIN_COS: f64 = 0.9999;
const FP16_ATOL: f64 = 1e-2;

/// Every output HF has a golden for, as (name, ours, HF's, row width).
fn outputs<'a>(
    out: &'a ForwardOutput,
    g: &HashMap<String, Golden>,
    lens: &[usize],
    cfg: &ModelConfig,
) -> Vec<(&'static str, &'a [f32], Vec<f64>, usize)> {
    let h = cfg.hidden_size;
    let mut v = vec![(
        "last_hidden_state",
        out.hidden.as_slice(),
        unpad(&g["last_hidden_state"], lens),
        h,
    )];
    if let Some(p) = g.get("pooler_output") {
        let ours = out.pooled.as_deref().expect("HF has a pooler output");
        v.push(("pooler_output", ours, p.data.clone(), h));
    }
    match &out.head {
        HeadOutput::None => {}
        HeadOutput::TokenLogits(x) => {
            let want = unpad(&g["logits"], lens);
            let width = want.len() / out.hidden.len() * h;
            v.push(("logits", x, want, width));
        }
        HeadOutput::SequenceLogits(x) => {
            let want = g["logits"].data.clone();
            let width = want.len() / lens.len();
            v.push(("logits", x, want, width));
        }
        other => panic!("no legacy fixture has head {other:?}"),
    }
    assert_eq!(v.len(), g.len() - 3, "every golden output is compared");
    v
}

fn open(name: &str) -> (ModelConfig, WeightStore) {
    let dir = model_dir(name);
    let cfg = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    (cfg, WeightStore::open_dir(&dir).unwrap())
}

/// The f32 CPU engine and the fp16 path (emulated) against HF's goldens.
fn check_against_hf(name: &str) {
    let (cfg, store) = open(name);
    let weights = load_weights(&cfg, &store).unwrap();
    assert!(
        weights.unused_tensors.is_empty(),
        "{name}: unused tensors {:?}",
        weights.unused_tensors
    );
    let g = load_golden(name);
    let (batch, lens) = golden_batch(&g, "", &cfg);

    let cpu = CpuEngine::new(weights.clone()).forward(&batch).unwrap();
    let mut failures = Vec::new();
    for (what, got, want, _) in outputs(&cpu, &g, &lens, &cfg) {
        match compare(&format!("{name} cpu {what}"), got, &want, CPU_ATOL, 0.0) {
            Ok(e) => eprintln!("{name} cpu {what}: max |err| {e:.2e}"),
            Err(msg) => failures.push(msg),
        }
    }

    let fp16 = Fp16Model::new(EmuSeam::new(), &weights)
        .unwrap()
        .forward(&batch)
        .unwrap();
    for (what, got, want, width) in outputs(&fp16, &g, &lens, &cfg) {
        let want32: Vec<f32> = want.iter().map(|&x| x as f32).collect();
        let worst_cos = got
            .chunks(width)
            .zip(want32.chunks(width))
            .map(|(a, b)| cosine(a, b))
            .fold(1f64, f64::min);
        let max_err = got
            .iter()
            .zip(&want)
            .map(|(&a, &b)| (a as f64 - b).abs())
            .fold(0f64, f64::max);
        eprintln!("{name} fp16 {what}: worst row cosine {worst_cos:.6}, max |err| {max_err:.2e}");
        if worst_cos < FP16_MIN_COS || max_err.is_nan() || max_err > FP16_ATOL {
            failures.push(format!(
                "{name} fp16 {what}: worst row cosine {worst_cos} (>= {FP16_MIN_COS}), \
                 max |err| {max_err} (<= {FP16_ATOL})"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn file_names(store: &WeightStore) -> Vec<(String, WeightFormat)> {
    store
        .files
        .iter()
        .map(|(p, f)| (p.file_name().unwrap().to_string_lossy().into_owned(), *f))
        .collect()
}

#[test]
fn legacy_single_file_matches_hf() {
    let (_, store) = open("bert_legacy");
    assert_eq!(
        file_names(&store),
        [("pytorch_model.bin".to_string(), WeightFormat::TorchLegacy)]
    );
    assert_eq!(store.main_dtype(), Some(DType::F32));
    check_against_hf("bert_legacy");
}

#[test]
fn legacy_two_shards_match_hf() {
    let (_, store) = open("bert_legacy_sharded");
    assert_eq!(
        file_names(&store),
        [
            (
                "pytorch_model-00001-of-00002.bin".to_string(),
                WeightFormat::TorchLegacy
            ),
            (
                "pytorch_model-00002-of-00002.bin".to_string(),
                WeightFormat::TorchLegacy
            ),
        ]
    );
    assert!(store
        .source
        .ends_with("bert_legacy_sharded/pytorch_model.bin.index.json"));
    check_against_hf("bert_legacy_sharded");
}

#[test]
fn legacy_f16_tied_and_views_match_hf() {
    let (_, store) = open("bert_legacy_f16_tied");
    assert_eq!(
        file_names(&store),
        [("pytorch_model.bin".to_string(), WeightFormat::TorchLegacy)]
    );
    assert_eq!(store.main_dtype(), Some(DType::F16));
    // The decoder is stored as the embeddings' storage under its own name.
    let (v, h) = (400, 32);
    let emb = store
        .get("bert.embeddings.word_embeddings.weight", &[v, h])
        .unwrap();
    let dec = store
        .get("cls.predictions.decoder.weight", &[v, h])
        .unwrap();
    assert_eq!(emb, dec);
    // query, key and value are three slices of one storage: different data.
    let qkv: Vec<Vec<f32>> = ["query", "key", "value"]
        .iter()
        .map(|m| {
            let name = format!("bert.encoder.layer.0.attention.self.{m}.weight");
            store.get(&name, &[h, h]).unwrap()
        })
        .collect();
    assert!(qkv[0] != qkv[1] && qkv[1] != qkv[2]);
    check_against_hf("bert_legacy_f16_tied");
}

/// A scratch folder with `config.json` of `from` and the given files.
fn scratch_with(tag: &str, from: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bertrt-legacy-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(model_dir(from).join("config.json"), dir.join("config.json")).unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    dir
}

fn open_err(dir: &Path) -> String {
    match WeightStore::open_dir(dir) {
        Ok(_) => panic!("{} should not open", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn tensorflow_and_flax_only_folders_say_how_to_convert() {
    for (file, flag) in [
        ("tf_model.h5", "from_tf=True"),
        ("flax_model.msgpack", "from_flax=True"),
    ] {
        let dir = scratch_with(flag, "bert_legacy", &[(file, b"not read")]);
        let e = open_err(&dir);
        assert!(
            e.contains(&dir.join(file).display().to_string())
                && e.contains(flag)
                && e.contains("BertForSequenceClassification.from_pretrained")
                && e.contains("save_pretrained"),
            "{e}"
        );
    }
    let empty = scratch_with("none", "bert_legacy", &[]);
    let e = open_err(&empty);
    assert!(
        e.contains("no weights found") && e.contains("pytorch_model.bin.index.json"),
        "{e}"
    );
}

#[test]
fn shard_errors_name_the_shard() {
    let src = model_dir("bert_legacy_sharded");
    let index = std::fs::read(src.join("pytorch_model.bin.index.json")).unwrap();
    let first = std::fs::read(src.join("pytorch_model-00001-of-00002.bin")).unwrap();
    // The second shard is missing.
    let dir = scratch_with(
        "shard-missing",
        "bert_legacy_sharded",
        &[
            ("pytorch_model.bin.index.json", &index),
            ("pytorch_model-00001-of-00002.bin", &first),
        ],
    );
    let e = open_err(&dir);
    assert!(
        e.contains("pytorch_model.bin.index.json") && e.contains("00002-of-00002.bin"),
        "{e}"
    );
    // The second shard is cut short.
    let second = std::fs::read(src.join("pytorch_model-00002-of-00002.bin")).unwrap();
    let cut = &second[..second.len() - 100];
    let dir = scratch_with(
        "shard-cut",
        "bert_legacy_sharded",
        &[
            ("pytorch_model.bin.index.json", &index),
            ("pytorch_model-00001-of-00002.bin", &first),
            ("pytorch_model-00002-of-00002.bin", cut),
        ],
    );
    let e = open_err(&dir);
    assert!(
        e.contains("pytorch_model-00002-of-00002.bin") && e.contains("truncated"),
        "{e}"
    );
    // The second shard is empty.
    std::fs::write(dir.join("pytorch_model-00002-of-00002.bin"), b"").unwrap();
    let e = open_err(&dir);
    assert!(
        e.contains("pytorch_model-00002-of-00002.bin: file is empty"),
        "{e}"
    );
}

#[test]
fn info_shows_format_and_shards() {
    for (name, format, shards) in [
        ("bert_legacy_sharded", "legacy torch.save", 2),
        ("bert_legacy", "legacy torch.save", 1),
        ("bert_qa", "torch.save zip", 1),
        ("bert_sharded", "safetensors", 2),
    ] {
        let v = info_json(&model_dir(name), &[]);
        let f = v[0]["weights_format"].as_str().unwrap();
        assert!(f.contains(format), "{name}: {f}");
        assert_eq!(v[0]["weights_shards"], shards, "{name}");
    }
}

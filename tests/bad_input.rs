//! Every bad input gets a clear error naming what is wrong; none panics.

mod common;

use bertrt::batch::{Batch, SequenceIds};
use bertrt::tasks::embed::{embed, EmbedOptions};
use bertrt::tokenize::Truncation;
use bertrt::{Device, Engine};
use std::path::{Path, PathBuf};

/// A scratch copy of a fixture model folder to break.
fn scratch(model: &str, tag: &str) -> PathBuf {
    let dst = std::env::temp_dir().join(format!("bertrt-bad-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(common::model_dir(model)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    dst
}

fn load_err(dir: &Path) -> String {
    match Engine::load_dir(dir, Device::Cpu) {
        Ok(_) => panic!("{} loaded but should not", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, v.to_string()).unwrap();
}

#[test]
fn missing_config() {
    let d = scratch("bert_mlm", "noconfig");
    std::fs::remove_file(d.join("config.json")).unwrap();
    let e = load_err(&d);
    assert!(e.contains("config.json") && e.contains("missing"), "{e}");
}

#[test]
fn malformed_config() {
    let d = scratch("bert_mlm", "badjson");
    std::fs::write(d.join("config.json"), "{ not json").unwrap();
    let e = load_err(&d);
    assert!(
        e.contains("config.json") && e.contains("not valid JSON"),
        "{e}"
    );
}

#[test]
fn config_missing_field_and_bad_values() {
    let d = scratch("bert_mlm", "nofield");
    edit_config(&d, |v| {
        v.as_object_mut().unwrap().remove("hidden_size");
    });
    let e = load_err(&d);
    assert!(e.contains("'hidden_size'"), "{e}");

    let d = scratch("bert_mlm", "badact");
    edit_config(&d, |v| v["hidden_act"] = "swishy".into());
    assert!(load_err(&d).contains("hidden_act 'swishy'"));

    let d = scratch("bert_mlm", "relpos");
    edit_config(&d, |v| v["position_embedding_type"] = "relative_key".into());
    assert!(load_err(&d).contains("relative_key"));
}

#[test]
fn unknown_model_type_and_architecture() {
    let d = scratch("bert_mlm", "gpt");
    edit_config(&d, |v| v["model_type"] = "gpt2".into());
    let e = load_err(&d);
    assert!(
        e.contains("'gpt2'") && e.contains("bert, albert, roberta"),
        "{e}"
    );

    let d = scratch("bert_mlm", "arch");
    edit_config(&d, |v| {
        v["architectures"] = serde_json::json!(["BertForNextSentencePrediction"])
    });
    let e = load_err(&d);
    assert!(
        e.contains("BertForNextSentencePrediction") && e.contains("BertForMaskedLM"),
        "{e}"
    );
}

#[test]
fn truncated_and_corrupt_safetensors() {
    let d = scratch("bert_mlm", "trunc");
    let p = d.join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(&d);
    assert!(
        e.contains("model.safetensors") && e.contains("not a valid safetensors"),
        "{e}"
    );
    std::fs::write(&p, b"garbage").unwrap();
    assert!(load_err(&d).contains("not a valid safetensors"));
}

#[test]
fn missing_weights_and_tokenizer() {
    let d = scratch("bert_mlm", "noweights");
    std::fs::remove_file(d.join("model.safetensors")).unwrap();
    assert!(load_err(&d).contains("no weights found"));
    let d = scratch("bert_mlm", "notok");
    for f in ["tokenizer.json", "vocab.txt"] {
        std::fs::remove_file(d.join(f)).unwrap();
    }
    assert!(load_err(&d).contains("no tokenizer files"));
}

#[test]
fn wrong_tensor_shape_names_tensor_and_both_shapes() {
    let d = scratch("bert_mlm", "shape");
    edit_config(&d, |v| v["intermediate_size"] = 40.into());
    let e = load_err(&d);
    assert!(
        e.contains("intermediate.dense.weight") && e.contains("[37, 32]") && e.contains("[40, 32]"),
        "{e}"
    );
}

#[test]
fn missing_tensor_is_named() {
    let d = scratch("bert_mlm", "missing");
    let p = d.join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<_> = st
        .tensors()
        .into_iter()
        .filter(|(name, _)| name != "bert.encoder.layer.1.attention.output.dense.bias")
        .collect();
    std::fs::write(&p, safetensors::serialize(kept, None).unwrap()).unwrap();
    let e = load_err(&d);
    assert!(
        e.contains("bert.encoder.layer.1.attention.output.dense.bias") && e.contains("missing"),
        "{e}"
    );
}

#[test]
fn wrong_dtype_names_tensor() {
    let d = scratch("bert_mlm", "dtype2");
    let p = d.join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ints: Vec<u8> = vec![0u8; 32 * 8];
    let kept: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            if name == "bert.embeddings.LayerNorm.bias" {
                (
                    name,
                    safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![32], &ints)
                        .unwrap(),
                )
            } else {
                (name, view)
            }
        })
        .collect();
    std::fs::write(&p, safetensors::serialize(kept, None).unwrap()).unwrap();
    let e = load_err(&d);
    assert!(
        e.contains("bert.embeddings.LayerNorm.bias") && e.contains("int64"),
        "{e}"
    );
}

#[test]
fn pickle_with_foreign_global_is_refused() {
    let d = scratch("bert_qa", "pickle");
    std::fs::copy(
        common::fixtures().join("pickle/malicious.bin"),
        d.join("pytorch_model.bin"),
    )
    .unwrap();
    let e = bertrt::weights::WeightStore::open_dir(&d)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("os.system"), "{e}");
}

#[test]
fn over_long_text_truncates_or_errors() {
    let eng = Engine::load_dir(&common::model_dir("bert_mlm"), Device::Cpu).unwrap();
    let long = "the cat sat on the mat ".repeat(40);
    let mut opts = EmbedOptions::from_model_dir(&eng.dir).unwrap();
    assert_eq!(embed(&eng, &[long.as_str()], &opts).unwrap().len(), 1);
    opts.truncation = Truncation::Error;
    let e = embed(&eng, &[long.as_str()], &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("input 0") && e.contains("limit of 64"), "{e}");
}

#[test]
fn empty_and_whitespace_text() {
    let eng = Engine::load_dir(&common::model_dir("bert_mlm"), Device::Cpu).unwrap();
    let opts = EmbedOptions::from_model_dir(&eng.dir).unwrap();
    for t in ["", "   \t\n"] {
        let e = embed(&eng, &["fine", t], &opts).unwrap_err().to_string();
        assert!(e.contains("input 1 is empty"), "{e}");
    }
}

#[test]
fn batch_rejects_bad_ids() {
    let cfg =
        bertrt::config::ModelConfig::from_file(&common::model_dir("bert_mlm").join("config.json"))
            .unwrap();
    let seq = |ids: Vec<u32>, types: Vec<u32>| SequenceIds {
        input_ids: ids,
        token_type_ids: types,
    };
    let e = Batch::pack(&[seq(vec![2, 100000, 3], vec![])], &cfg)
        .unwrap_err()
        .to_string();
    assert!(e.contains("100000") && e.contains("vocabulary"), "{e}");
    let e = Batch::pack(&[seq(vec![2, 5, 3], vec![0, 7, 0])], &cfg)
        .unwrap_err()
        .to_string();
    assert!(e.contains("token_type_id 7"), "{e}");
    let e = Batch::pack(&[seq(vec![], vec![])], &cfg)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no tokens"), "{e}");
    let e = Batch::pack(&[seq(vec![5; 65], vec![])], &cfg)
        .unwrap_err()
        .to_string();
    assert!(e.contains("65 tokens") && e.contains("64"), "{e}");
}

#[test]
fn bad_device_and_model_arguments() {
    assert!("gpu"
        .parse::<Device>()
        .unwrap_err()
        .to_string()
        .contains("'gpu'"));
    assert_eq!("cuda:1".parse::<Device>().unwrap(), Device::Cuda(1));
    // Hub ids that are not cached: tests/cli.rs (in a child process, so the
    // HF_* variables it sets cannot leak into other tests).
}

/// A tokenizer.json whose `decoder` object does not parse (one flipped bit in
/// `true`): tokenizers 0.22.2 panics on it (decoders/mod.rs, `expect("Helper")`).
/// The load must fail with our error naming the file, not unwind.
#[test]
fn tokenizer_json_that_panics_tokenizers_is_an_error() {
    let d = scratch("bert_mlm", "decoder-panic");
    std::fs::copy(
        common::fixtures().join("broken/decoder_panics_tokenizers.json"),
        d.join("tokenizer.json"),
    )
    .unwrap();
    let msg = load_err(&d);
    assert!(
        msg.contains(&d.join("tokenizer.json").display().to_string())
            && msg.contains("tokenizers crate failed"),
        "{msg}"
    );
}

/// Sizes in config.json are capped before anything is sized from them
/// (found by the fuzzer: inner_group_num = 2^64-1 overflowed a Vec's capacity
/// (panic), inner_group_num = 2^31 asked for 16 GiB in one allocation).
#[test]
fn absurd_config_sizes_are_errors() {
    for (field, value, want) in [
        (
            "inner_group_num",
            u64::MAX,
            "field 'inner_group_num' is 18446744073709551615",
        ),
        (
            "vocab_size",
            1_000_000_000_000,
            "field 'vocab_size' is 1000000000000",
        ),
        (
            "num_hidden_layers",
            1 << 31,
            "field 'num_hidden_layers' is 2147483648",
        ),
    ] {
        let d = scratch("albert_share_attention", &format!("cap-{field}"));
        edit_config(&d, |v| v[field] = value.into());
        let msg = load_err(&d);
        assert!(msg.contains(want) && msg.contains("config.json"), "{msg}");
    }
    let d = scratch("albert_share_attention", "cap-groups");
    edit_config(&d, |v| {
        v["num_hidden_layers"] = 0.into();
        v["num_hidden_groups"] = (1u64 << 31).into();
    });
    let msg = load_err(&d);
    assert!(msg.contains("num_hidden_groups"), "{msg}");
}

/// A tokenizer.json whose post-processor template names a special token the
/// file does not define (found by the fuzzer): tokenizers 0.22.2 loads it and
/// panics on the first encode (processors/template.rs, "no entry found for
/// key"). The load must fail instead, naming the file.
#[test]
fn tokenizer_json_with_undefined_template_token_fails_at_load() {
    let d = std::env::temp_dir().join(format!("bertrt-bad-template-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::copy(
        common::fixtures().join("fuzz/tokenizer_json/crash-9cc3259bbea50081-s0.json"),
        d.join("tokenizer.json"),
    )
    .unwrap();
    let msg = match bertrt::tokenize::Tokenizer::from_dir(&d) {
        Ok(_) => panic!("loaded"),
        Err(e) => e.to_string(),
    };
    assert!(
        msg.contains(&d.join("tokenizer.json").display().to_string())
            && msg.contains("tokenizers crate failed"),
        "{msg}"
    );
}

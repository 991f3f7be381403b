//! Tokenizers built from legacy files (vocab.txt / vocab.json + merges.txt /
//! spiece.model, no tokenizer.json) must equal HF's fast tokenizer exactly.
//!
//! * `tests/fixtures/tokenizers/<name>/` without a tokenizer.json, against
//!   `tests/fixtures/tokenize/<name>.json` (ids, type ids, mask, char offsets);
//! * every `tests/fixtures/models/<name>/`, built from its legacy files only,
//!   against the input ids / type ids of `tests/fixtures/golden/<name>.safetensors`.
//!
//! Both fixture sets come from scripts/gen_fixtures.py (transformers 4.57).

use std::path::{Path, PathBuf};

use bertrt::tokenize::legacy::from_legacy_files;
use serde_json::Value;
use tokenizers::{EncodeInput, Encoding, Tokenizer};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}

fn build(dir: &Path) -> Tokenizer {
    let tok = from_legacy_files(dir)
        .unwrap_or_else(|e| panic!("from_legacy_files({}): {e}", dir.display()));
    assert!(
        tok.get_padding().is_none(),
        "{}: padding is set",
        dir.display()
    );
    assert!(
        tok.get_truncation().is_none(),
        "{}: truncation is set",
        dir.display()
    );
    tok
}

/// Encodes like HF's `tokenizer(text, pair)`: HF's Python drops an empty
/// `text_pair` ("" is falsy), so it is encoded as a single sequence.
fn encode(tok: &Tokenizer, text: &str, pair: Option<&str>) -> Encoding {
    let input: EncodeInput = match pair.filter(|p| !p.is_empty()) {
        Some(p) => (text, p).into(),
        None => text.into(),
    };
    // Char offsets, converted the way HF's Python binding does.
    tok.encode_char_offsets(input, true)
        .unwrap_or_else(|e| panic!("encode {text:?} / {pair:?}: {e}"))
}

fn u32s(v: &Value) -> Option<Vec<u32>> {
    v.as_array()?
        .iter()
        .map(|x| x.as_u64().map(|x| x as u32))
        .collect()
}

#[test]
fn legacy_tokenizer_folders_match_hf() {
    let root = fixtures();
    let mut checked = 0;
    let mut failures: Vec<String> = Vec::new();
    for dir in subdirs(&root.join("tokenizers")) {
        if dir.join("tokenizer.json").exists() {
            continue; // not a legacy folder
        }
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let expected = root.join("tokenize").join(format!("{name}.json"));
        let text = match std::fs::read_to_string(&expected) {
            Ok(t) => t,
            Err(e) => {
                failures.push(format!(
                    "{name}: no expectations ({}: {e})",
                    expected.display()
                ));
                continue;
            }
        };
        let cases: Vec<Value> =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", expected.display()));
        let tok = build(&dir);
        let mut bad = 0;
        for case in &cases {
            let text = case["text"].as_str().expect("text");
            let pair = case["pair"].as_str();
            let enc = encode(&tok, text, pair);
            let mut msgs = Vec::new();
            let exp_ids = u32s(&case["input_ids"]).expect("input_ids");
            if enc.get_ids() != exp_ids.as_slice() {
                msgs.push(format!(
                    "input_ids\n      got {:?} {:?}\n      exp {:?} {}",
                    enc.get_ids(),
                    enc.get_tokens(),
                    exp_ids,
                    case["tokens"]
                ));
            }
            if let Some(exp) = u32s(&case["token_type_ids"]) {
                if enc.get_type_ids() != exp.as_slice() {
                    msgs.push(format!(
                        "token_type_ids got {:?} exp {exp:?}",
                        enc.get_type_ids()
                    ));
                }
            }
            if let Some(exp) = u32s(&case["attention_mask"]) {
                if enc.get_attention_mask() != exp.as_slice() {
                    msgs.push(format!(
                        "attention_mask got {:?} exp {exp:?}",
                        enc.get_attention_mask()
                    ));
                }
            }
            if let Some(exp) = case["offsets"].as_array() {
                let exp: Vec<(usize, usize)> = exp
                    .iter()
                    .map(|o| {
                        (
                            o[0].as_u64().unwrap() as usize,
                            o[1].as_u64().unwrap() as usize,
                        )
                    })
                    .collect();
                if enc.get_offsets() != exp.as_slice() {
                    msgs.push(format!("offsets got {:?} exp {exp:?}", enc.get_offsets()));
                }
            }
            if !msgs.is_empty() {
                bad += 1;
                if bad <= 5 {
                    failures.push(format!(
                        "{name}: text {text:?} pair {pair:?}:\n    {}",
                        msgs.join("\n    ")
                    ));
                }
            }
        }
        if bad > 5 {
            failures.push(format!("{name}: ... {bad} mismatching cases in all"));
        }
        eprintln!("{name}: {} cases, {bad} mismatching", cases.len());
        checked += 1;
    }
    // bpe, unigram, wordpiece, wordpiece_cased, wordpiece_cased_strip_accents.
    assert!(
        checked >= 5 && failures.is_empty(),
        "{checked} legacy tokenizer folders checked under {} (expected at least 5):\n{}",
        root.join("tokenizers").display(),
        failures.join("\n")
    );
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
}

/// Reads an integer tensor (i64 or i32) from a safetensors file as rows.
fn int_rows(st: &safetensors::SafeTensors, name: &str) -> Option<Vec<Vec<i64>>> {
    let t = st.tensor(name).ok()?;
    let shape = t.shape().to_vec();
    let data = t.data();
    let vals: Vec<i64> = match t.dtype() {
        safetensors::Dtype::I64 => data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        safetensors::Dtype::I32 => data
            .chunks_exact(4)
            .map(|c| i64::from(i32::from_le_bytes(c.try_into().unwrap())))
            .collect(),
        d => panic!("{name}: unexpected dtype {d:?}"),
    };
    let cols = *shape.last()?;
    Some(vals.chunks(cols).map(|c| c.to_vec()).collect())
}

/// A text and an optional pair.
type Input = (String, Option<String>);

#[test]
fn legacy_build_of_model_folders_matches_golden_ids() {
    let root = fixtures();
    let mut checked = 0;
    let mut failures: Vec<String> = Vec::new();
    for dir in subdirs(&root.join("models")) {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let meta_path = root.join("golden").join(format!("{name}.json"));
        let st_path = root.join("golden").join(format!("{name}.safetensors"));
        let (meta, bytes) = match (std::fs::read_to_string(&meta_path), std::fs::read(&st_path)) {
            (Ok(m), Ok(b)) => (m, b),
            (m, b) => {
                failures.push(format!(
                    "{name}: no golden ({}: {}; {}: {})",
                    meta_path.display(),
                    m.err().map_or("ok".into(), |e| e.to_string()),
                    st_path.display(),
                    b.err().map_or("ok".into(), |e| e.to_string())
                ));
                continue;
            }
        };
        let meta: Value = serde_json::from_str(&meta).expect("golden json");
        let st = safetensors::SafeTensors::deserialize(&bytes).expect("golden safetensors");
        // Built from the legacy files only, whether or not a tokenizer.json is there.
        let tok = build(&dir);
        let mut groups: Vec<(&str, Vec<Input>)> = Vec::new();
        if let Some(texts) = meta["texts"].as_array() {
            let v = texts
                .iter()
                .map(|t| (t.as_str().unwrap().to_string(), None))
                .collect();
            groups.push(("", v));
        }
        if let Some(pairs) = meta["pairs"].as_array() {
            let v = pairs
                .iter()
                .map(|p| {
                    (
                        p[0].as_str().unwrap().to_string(),
                        Some(p[1].as_str().unwrap().to_string()),
                    )
                })
                .collect();
            groups.push(("pair_", v));
        }
        for (prefix, inputs) in groups {
            let Some(ids) = int_rows(&st, &format!("{prefix}input_ids")) else {
                failures.push(format!(
                    "{name}: the golden lists {prefix}texts but has no {prefix}input_ids"
                ));
                continue;
            };
            let mask = int_rows(&st, &format!("{prefix}attention_mask")).expect("attention_mask");
            let types = int_rows(&st, &format!("{prefix}token_type_ids"));
            for (i, (a, b)) in inputs.iter().enumerate() {
                let enc = encode(&tok, a, b.as_deref());
                let n = mask[i].iter().filter(|&&m| m != 0).count();
                let got: Vec<i64> = enc.get_ids().iter().map(|&x| i64::from(x)).collect();
                if got != ids[i][..n] {
                    failures.push(format!(
                        "{name} {prefix}input_ids[{i}] ({a:?}, {b:?}):\n    got {got:?}\n    exp {:?}",
                        &ids[i][..n]
                    ));
                    continue;
                }
                if let Some(types) = &types {
                    let got: Vec<i64> = enc.get_type_ids().iter().map(|&x| i64::from(x)).collect();
                    if got != types[i][..n] {
                        failures.push(format!(
                            "{name} {prefix}token_type_ids[{i}]: got {got:?} exp {:?}",
                            &types[i][..n]
                        ));
                    }
                }
            }
        }
        checked += 1;
    }
    // The 20 committed fixture models; new folders only add to these.
    assert!(
        checked >= 20,
        "{checked} model folders checked under {} (expected at least 20)",
        root.join("models").display()
    );
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
}

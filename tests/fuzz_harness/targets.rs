//! The fuzz targets: each feeds one kind of untrusted input, seeded from the
//! committed fixtures, through the same entry points the CLI uses.

use super::mutate::Mutator;
use bertrt::tokenize::{Tokenizer, Truncation};
use bertrt::weights::{pickle, WeightStore};
use bertrt::{Device, Engine};
use std::io::{Cursor, Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

pub type RunFn = Box<dyn Fn(&[u8], usize) -> Result<(), String>>;

/// A format-aware mutation of a whole input.
pub type Structured = fn(&mut Mutator, Vec<u8>) -> Vec<u8>;

/// What the mutator knows about a target's input format.
#[derive(Clone, Copy)]
pub struct Format {
    /// Structural JSON mutations apply.
    pub json: bool,
    /// The part of a seed most mutations should hit (a safetensors header).
    pub focus: fn(&[u8]) -> Option<Range<usize>>,
    /// A format-aware mutation used for half the inputs, if any.
    pub structured: Option<Structured>,
}

const BYTES: Format = Format {
    json: false,
    focus: no_focus,
    structured: None,
};
const JSON: Format = Format {
    json: true,
    focus: no_focus,
    structured: None,
};
const SAFETENSORS: Format = Format {
    json: false,
    focus: safetensors_header,
    structured: Some(Mutator::mutate_safetensors_header),
};

pub struct Target {
    pub name: &'static str,
    /// Extension of saved inputs (what the file is).
    pub ext: &'static str,
    pub seeds: Vec<Vec<u8>>,
    pub format: Format,
    /// Runs one input, made from seed `i`'s file; Err is a clean rejection.
    pub run: RunFn,
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Where every target's scratch folders live (removed by the caller).
pub fn scratch_root() -> PathBuf {
    std::env::temp_dir().join(format!("bertrt-fuzz-{}", std::process::id()))
}

fn no_focus(_: &[u8]) -> Option<Range<usize>> {
    None
}

/// The 8-byte length and the JSON header of a safetensors file.
fn safetensors_header(seed: &[u8]) -> Option<Range<usize>> {
    let n = u64::from_le_bytes(seed.get(..8)?.try_into().ok()?) as usize;
    Some(0..8usize.saturating_add(n).min(seed.len()))
}

/// A target that writes the input as `file` into a scratch copy of each
/// fixture folder in `bases` (the seed is that folder's own `file`) and runs
/// `check` on the folder.
fn folder_target(
    name: &'static str,
    ext: &'static str,
    file: &'static str,
    bases: &[PathBuf],
    format: Format,
    check: fn(&Path) -> bertrt::Result<()>,
) -> Target {
    let mut seeds = Vec::new();
    let mut dirs = Vec::new();
    for (i, base) in bases.iter().enumerate() {
        let seed = std::fs::read(base.join(file))
            .unwrap_or_else(|e| panic!("{}: {e}", base.join(file).display()));
        let dir = scratch_root().join(name).join(i.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        for e in std::fs::read_dir(base).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
        }
        seeds.push(seed);
        dirs.push(dir);
    }
    Target {
        name,
        ext,
        seeds,
        format,
        run: Box::new(move |input, i| {
            let dir = &dirs[i % dirs.len()];
            std::fs::write(dir.join(file), input).map_err(|e| e.to_string())?;
            check(dir).map_err(|e| e.to_string())
        }),
    }
}

fn load_engine(dir: &Path) -> bertrt::Result<()> {
    Engine::load_dir(dir, Device::Cpu).map(|_| ())
}

/// Every tensor read back at its stored shape, then the whole model load.
fn load_weights(dir: &Path) -> bertrt::Result<()> {
    let store = WeightStore::open_dir(dir)?;
    let names: Vec<String> = store.names().cloned().collect();
    for n in &names {
        let shape = store.shape(n).unwrap_or(&[]).to_vec();
        let _ = store.get(n, &shape);
    }
    let _ = store.main_dtype();
    load_engine(dir)
}

/// Loading plus what the tasks do with a tokenizer: encode (with a pair,
/// truncated, refused), decode, tokens back to text.
fn use_tokenizer(dir: &Path) -> bertrt::Result<()> {
    let t = Tokenizer::from_dir(dir)?;
    let _ = (t.vocab_size(), t.mask_id(), t.token_to_id("[UNK]"));
    let long = "abc déf 北京 12,345 ".repeat(20);
    let cases: [(&str, Option<&str>, usize, Truncation); 4] = [
        (
            "Hello world! Café naïve",
            None,
            512,
            Truncation::LongestFirst,
        ),
        (
            "What is it?",
            Some("It is 3.14 things."),
            512,
            Truncation::Error,
        ),
        (&long, Some("short pair"), 16, Truncation::LongestFirst),
        (&long, None, 8, Truncation::Error),
    ];
    for (text, pair, max_len, trunc) in cases {
        if let Ok(e) = t.encode(text, pair, max_len, trunc) {
            let _ = t.decode(&e.ids, true);
            let _ = t.decode(&e.ids, false);
            let _ = t.tokens_to_string(e.tokens.clone());
            for id in &e.ids {
                let _ = t.id_to_token(*id);
            }
        }
    }
    Ok(())
}

fn models(names: &[&str]) -> Vec<PathBuf> {
    names
        .iter()
        .map(|n| fixtures().join("models").join(n))
        .collect()
}

fn tokenizers(names: &[&str]) -> Vec<PathBuf> {
    names
        .iter()
        .map(|n| fixtures().join("tokenizers").join(n))
        .collect()
}

/// The entries of a zip, in order.
fn zip_entries(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut z = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
    (0..z.len())
        .map(|i| {
            let mut f = z.by_index(i).unwrap();
            let mut data = Vec::new();
            f.read_to_end(&mut data).unwrap();
            (f.name().to_string(), data)
        })
        .collect()
}

fn write_zip(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in entries {
        w.start_file(name.as_str(), opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// The legacy (pre-1.6, non-zip) torch.save format, straight from bytes.
fn read_pickle_legacy(bytes: &[u8]) -> Result<(), String> {
    bertrt::weights::torch_legacy::read_legacy_bytes(bytes, Path::new("pytorch_model.bin"))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn read_pickle_zip(bytes: &[u8]) -> Result<(), String> {
    pickle::read_pytorch_bin_from(Cursor::new(bytes), Path::new("pytorch_model.bin"))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Every target, seeded from tests/fixtures.
pub fn all_targets() -> Vec<Target> {
    let pickles: Vec<Vec<u8>> = [
        fixtures().join("pickle/state_dict.bin"),
        fixtures().join("models/bert_qa/pytorch_model.bin"),
    ]
    .iter()
    .map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
    .collect();
    // The inner pickles, and the rest of each zip to put them back into.
    let unzipped: Vec<Vec<(String, Vec<u8>)>> = pickles.iter().map(|z| zip_entries(z)).collect();
    let inner_seeds: Vec<Vec<u8>> = unzipped
        .iter()
        .map(|entries| {
            entries
                .iter()
                .find(|(n, _)| n.ends_with("/data.pkl"))
                .expect("data.pkl")
                .1
                .clone()
        })
        .collect();

    let mut jsonl_seeds = Vec::new();
    for f in ["inputs/batch.jsonl", "inputs/qa.jsonl"] {
        let p = fixtures().join(f);
        jsonl_seeds.push(std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())));
    }

    vec![
        folder_target(
            "config",
            "json",
            "config.json",
            &models(&[
                "bert_mlm",
                "albert_share_attention",
                "roberta_cls",
                "electra_disc",
                "bert_tokcls",
                "bert_qa",
            ]),
            JSON,
            load_engine,
        ),
        folder_target(
            "safetensors",
            "safetensors",
            "model.safetensors",
            &models(&[
                "bert_mlm",
                "bert_model_f16",
                "bert_model_bf16",
                "albert_cls",
                "electra_gen",
            ]),
            SAFETENSORS,
            load_weights,
        ),
        Target {
            name: "pickle_zip",
            ext: "bin",
            seeds: pickles.clone(),
            format: BYTES,
            run: Box::new(|input, _| read_pickle_zip(input)),
        },
        Target {
            name: "pickle_legacy",
            ext: "bin",
            seeds: [
                "pickle/state_dict_legacy.bin",
                "models/bert_legacy/pytorch_model.bin",
                "models/bert_legacy_f16_tied/pytorch_model.bin",
            ]
            .iter()
            .map(|f| {
                let p = fixtures().join(f);
                std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            })
            .collect(),
            format: BYTES,
            run: Box::new(|input, _| read_pickle_legacy(input)),
        },
        Target {
            name: "pickle_data",
            ext: "pkl",
            seeds: inner_seeds,
            format: BYTES,
            run: Box::new(move |input, i| {
                let mut entries = unzipped[i % unzipped.len()].clone();
                for (n, data) in entries.iter_mut() {
                    if n.ends_with("/data.pkl") {
                        *data = input.to_vec();
                    }
                }
                read_pickle_zip(&write_zip(&entries))
            }),
        },
        folder_target(
            "tokenizer_json",
            "json",
            "tokenizer.json",
            &[
                tokenizers(&["wordpiece", "wordpiece_cased", "bpe", "unigram"]),
                models(&["xlmr_model"]),
            ]
            .concat(),
            JSON,
            use_tokenizer,
        ),
        folder_target(
            "vocab_txt",
            "txt",
            "vocab.txt",
            &tokenizers(&[
                "wordpiece_legacy",
                "wordpiece_cased_legacy",
                "wordpiece_cased_strip_accents_legacy",
            ]),
            BYTES,
            use_tokenizer,
        ),
        folder_target(
            "vocab_json",
            "json",
            "vocab.json",
            &tokenizers(&["bpe_legacy"]),
            JSON,
            use_tokenizer,
        ),
        folder_target(
            "merges_txt",
            "txt",
            "merges.txt",
            &tokenizers(&["bpe_legacy"]),
            BYTES,
            use_tokenizer,
        ),
        folder_target(
            "spiece_model",
            "model",
            "spiece.model",
            &[tokenizers(&["unigram_legacy"]), models(&["albert_mlm"])].concat(),
            BYTES,
            use_tokenizer,
        ),
        folder_target(
            "tokenizer_config",
            "json",
            "tokenizer_config.json",
            &tokenizers(&[
                "wordpiece_legacy",
                "wordpiece_cased_strip_accents_legacy",
                "bpe_legacy",
                "unigram_legacy",
            ]),
            JSON,
            use_tokenizer,
        ),
        Target {
            name: "jsonl",
            ext: "jsonl",
            seeds: jsonl_seeds,
            format: BYTES,
            run: Box::new(|input, _| {
                for jsonl in [true, false] {
                    for r in bertrt::input::parse_records(input, "fuzz.jsonl", jsonl)
                        .into_iter()
                        .flatten()
                    {
                        let _ = bertrt::input::field(&r, "text");
                        let _ = bertrt::input::field(&r, "question");
                    }
                }
                Ok(())
            }),
        },
    ]
}

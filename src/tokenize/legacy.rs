//! Builds, from legacy HF tokenizer files, the same `tokenizers::Tokenizer` that
//! transformers 4.57 builds with `AutoTokenizer.from_pretrained(dir, use_fast=True)`
//! when the folder has no `tokenizer.json`: HF instantiates the slow tokenizer
//! (`BertTokenizer`, `RobertaTokenizer`, `AlbertTokenizer`), converts it with
//! `convert_slow_tokenizer.py` (`BertConverter`, `RobertaConverter`,
//! `AlbertConverter`), and then the fast class's `__init__` adjusts the result
//! and registers the special / added tokens. This module replays those steps:
//!
//! * files: `vocab.txt` (WordPiece), `vocab.json` + `merges.txt` (byte-level
//!   BPE), `spiece.model` (SentencePiece Unigram), plus `tokenizer_config.json`,
//!   `special_tokens_map.json` and `added_tokens.json`, read with the precedence
//!   of `PreTrainedTokenizerBase._from_pretrained` (`special_tokens_map.json` and
//!   `added_tokens.json` are only read when `tokenizer_config.json` has no
//!   `added_tokens_decoder`);
//! * the slow class's defaults and its `AddedToken` wrapping of special tokens
//!   (RoBERTa wraps every special token, with `lstrip=True` for `<mask>`;
//!   ALBERT wraps `[MASK]` with `lstrip=True, normalized=False`), including the
//!   `copy.deepcopy` of `init_kwargs` that fixes `normalized` at that point;
//! * the slow tokenizer's ids for the post-processor's special tokens;
//! * the converter's model / normalizer / pre-tokenizer / post-processor /
//!   decoder;
//! * `PreTrainedTokenizerFast.__init__`'s `add_tokens` call (which tokens, in
//!   which order, with which flags), done through the same `tokenizers` crate,
//!   so ids and matching behave identically.
//!
//! The result has no padding and no truncation.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::models::unigram::Unigram;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::{
    BertNormalizer, Lowercase, NormalizerWrapper, Precompiled, Replace, Sequence, StripAccents,
    NFKD,
};
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

use super::spm_proto;
use crate::error::{Error, Result};

const TOKENIZER_CONFIG: &str = "tokenizer_config.json";
const SPECIAL_TOKENS_MAP: &str = "special_tokens_map.json";
const ADDED_TOKENS: &str = "added_tokens.json";
const MODEL_CONFIG: &str = "config.json";
const WP_VOCAB: &str = "vocab.txt";
const BPE_VOCAB: &str = "vocab.json";
const BPE_MERGES: &str = "merges.txt";
const SPM_MODEL: &str = "spiece.model";

/// `SpecialTokensMixin.SPECIAL_TOKENS_ATTRIBUTES` without
/// `additional_special_tokens`, in HF's order.
const SPECIAL_KEYS: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];
const ADDITIONAL: &str = "additional_special_tokens";

/// Which slow tokenizer / converter pair HF would use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `BertTokenizer` + `BertConverter` (also DistilBERT, ELECTRA, ...).
    WordPiece,
    /// `RobertaTokenizer` + `RobertaConverter` (also Longformer, BART, ...).
    ByteLevelBpe,
    /// `AlbertTokenizer` + `AlbertConverter`.
    Unigram,
}

/// Builds the tokenizer HF would build from legacy files in `dir`: vocab.txt (WordPiece),
/// vocab.json + merges.txt (byte-level BPE), or spiece.model (SentencePiece Unigram, ALBERT).
/// Honours tokenizer_config.json / special_tokens_map.json (do_lower_case, strip_accents,
/// tokenize_chinese_chars, add_prefix_space, trim_offsets, keep_accents, special tokens).
pub fn from_legacy_files(dir: &Path) -> Result<Tokenizer> {
    let cfg = HfConfig::load(dir)?;
    let kind = detect_kind(dir, &cfg)?;
    let slow = SlowSpecials::new(kind, &cfg);
    let mut tok = match kind {
        Kind::WordPiece => build_wordpiece(dir, &cfg, &slow)?,
        Kind::ByteLevelBpe => build_bpe(dir, &cfg, &slow)?,
        Kind::Unigram => build_unigram(dir, &cfg, &slow)?,
    };
    add_fast_tokens(&mut tok, &cfg, &slow);
    // PreTrainedTokenizerFast: `encode_special_tokens = split_special_tokens`.
    tok.set_encode_special_tokens(cfg.bool_or("split_special_tokens", false)?);
    tok.with_padding(None);
    tok.with_truncation(None)
        .map_err(|e| Error::Tokenizer(format!("{}: {e}", dir.display())))?;
    Ok(tok)
}

// ---------------------------------------------------------------------------
// Python-side AddedToken model
// ---------------------------------------------------------------------------

/// A Python `tokenizers.AddedToken`: flags not given stay unset (`None`) and are
/// resolved when the Rust token is built (`normalized` then defaults to
/// `!special`, the others to false).
#[derive(Clone, Debug, PartialEq)]
struct PyTok {
    content: String,
    single_word: Option<bool>,
    lstrip: Option<bool>,
    rstrip: Option<bool>,
    normalized: Option<bool>,
    special: bool,
}

impl PyTok {
    fn new(content: &str) -> Self {
        PyTok {
            content: content.to_string(),
            single_word: None,
            lstrip: None,
            rstrip: None,
            normalized: None,
            special: false,
        }
    }

    fn resolve(&self) -> AddedToken {
        let mut t = AddedToken::from(self.content.clone(), self.special);
        if let Some(v) = self.single_word {
            t = t.single_word(v);
        }
        if let Some(v) = self.lstrip {
            t = t.lstrip(v);
        }
        if let Some(v) = self.rstrip {
            t = t.rstrip(v);
        }
        if let Some(v) = self.normalized {
            t = t.normalized(v);
        }
        t
    }

    /// `copy.deepcopy` goes through `__getstate__`/`__setstate__`, which fixes
    /// every flag to its current resolved value.
    fn frozen(&self) -> PyTok {
        let t = self.resolve();
        PyTok {
            content: t.content,
            single_word: Some(t.single_word),
            lstrip: Some(t.lstrip),
            rstrip: Some(t.rstrip),
            normalized: Some(t.normalized),
            special: t.special,
        }
    }

    /// `AddedToken(**obj)`, as HF does for dicts in its json files.
    fn from_json(obj: &Map<String, Value>, file: &Path) -> Result<PyTok> {
        let content = match obj.get("content") {
            Some(Value::String(s)) => s.clone(),
            _ => {
                return Err(tok_err(
                    file,
                    "an AddedToken entry has no string \"content\"",
                ))
            }
        };
        let flag = |k: &str| -> Result<Option<bool>> {
            match obj.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Bool(b)) => Ok(Some(*b)),
                Some(v) => Err(tok_err(
                    file,
                    &format!("AddedToken {content:?}: \"{k}\" is {v}, expected a boolean"),
                )),
            }
        };
        Ok(PyTok {
            single_word: flag("single_word")?,
            lstrip: flag("lstrip")?,
            rstrip: flag("rstrip")?,
            normalized: flag("normalized")?,
            special: flag("special")?.unwrap_or(false),
            content,
        })
    }
}

/// A special-token attribute value: a plain string or an `AddedToken`.
#[derive(Clone, Debug, PartialEq)]
enum Special {
    Str(String),
    Tok(PyTok),
}

impl Special {
    fn content(&self) -> &str {
        match self {
            Special::Str(s) => s,
            Special::Tok(t) => &t.content,
        }
    }

    fn frozen(&self) -> Special {
        match self {
            Special::Str(s) => Special::Str(s.clone()),
            Special::Tok(t) => Special::Tok(t.frozen()),
        }
    }

    /// Python `==` between special values: strings by value, AddedTokens by all
    /// resolved flags, a string never equals an AddedToken.
    fn py_eq(&self, other: &Special) -> bool {
        match (self, other) {
            (Special::Str(a), Special::Str(b)) => a == b,
            (Special::Tok(a), Special::Tok(b)) => a.resolve() == b.resolve(),
            _ => false,
        }
    }
}

// ---------------------------------------------------------------------------
// Configuration files
// ---------------------------------------------------------------------------

/// What `_from_pretrained` hands to the tokenizer class.
struct HfConfig {
    /// tokenizer_config.json (empty when absent).
    kwargs: Map<String, Value>,
    /// Special-token attributes that were given (`None` = explicitly null).
    specials: HashMap<&'static str, Option<Special>>,
    additional: Option<Vec<Special>>,
    /// `extra_special_tokens` (named model-specific special tokens), in file order.
    extra: Vec<Special>,
    /// `added_tokens_decoder`: from tokenizer_config.json or added_tokens.json.
    added_decoder: BTreeMap<u32, PyTok>,
    config_path: PathBuf,
}

fn tok_err(file: &Path, msg: &str) -> Error {
    Error::Tokenizer(format!("{}: {msg}", file.display()))
}

fn read_json_object(path: &Path) -> Result<Option<Map<String, Value>>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(m)) => Ok(Some(m)),
        Ok(_) => Err(tok_err(path, "expected a JSON object")),
        Err(e) => Err(tok_err(path, &format!("invalid JSON: {e}"))),
    }
}

fn parse_special(v: &Value, file: &Path, force_special: bool) -> Result<Option<Special>> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(Special::Str(s.clone()))),
        Value::Object(o) => {
            let mut t = PyTok::from_json(o, file)?;
            if force_special {
                t.special = true;
            }
            Ok(Some(Special::Tok(t)))
        }
        other => Err(tok_err(
            file,
            &format!("special token {other} must be a string or an AddedToken object"),
        )),
    }
}

fn parse_special_list(v: &Value, file: &Path, force_special: bool) -> Result<Option<Vec<Special>>> {
    match v {
        Value::Null => Ok(None),
        Value::Array(items) => {
            let mut out = Vec::new();
            for it in items {
                if let Some(s) = parse_special(it, file, force_special)? {
                    out.push(s);
                }
            }
            Ok(Some(out))
        }
        other => Err(tok_err(
            file,
            &format!("{ADDITIONAL} is {other}, expected a list"),
        )),
    }
}

/// `extra_special_tokens` of tokenizer_config.json, keeping the file's key order
/// (HF appends them, in that order, to the special-token attributes).
fn extra_special_tokens(config_path: &Path) -> Result<Vec<Special>> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    use std::fmt;

    /// The values of a JSON object, in file order.
    struct Ordered(Vec<Value>);
    impl<'de> serde::Deserialize<'de> for Ordered {
        fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Ordered;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: MapAccess<'de>>(
                    self,
                    mut m: A,
                ) -> std::result::Result<Ordered, A::Error> {
                    let mut out = Vec::new();
                    while let Some((_k, v)) = m.next_entry::<String, Value>()? {
                        out.push(v);
                    }
                    Ok(Ordered(out))
                }
                fn visit_unit<E>(self) -> std::result::Result<Ordered, E> {
                    Ok(Ordered(Vec::new()))
                }
            }
            d.deserialize_any(V)
        }
    }
    /// tokenizer_config.json with only `extra_special_tokens` kept.
    struct Top(Vec<Value>);
    impl<'de> serde::Deserialize<'de> for Top {
        fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Top;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: MapAccess<'de>>(
                    self,
                    mut m: A,
                ) -> std::result::Result<Top, A::Error> {
                    let mut out = Vec::new();
                    while let Some(k) = m.next_key::<String>()? {
                        if k == "extra_special_tokens" {
                            out = m.next_value::<Ordered>()?.0;
                        } else {
                            m.next_value::<IgnoredAny>()?;
                        }
                    }
                    Ok(Top(out))
                }
            }
            d.deserialize_map(V)
        }
    }
    if !config_path.is_file() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(config_path).map_err(|e| Error::io(config_path, e))?;
    let top: Top = serde_json::from_str(&text)
        .map_err(|e| tok_err(config_path, &format!("extra_special_tokens: {e}")))?;
    let mut out = Vec::new();
    for v in &top.0 {
        if let Some(s) = parse_special(v, config_path, false)? {
            out.push(s);
        }
    }
    Ok(out)
}

impl HfConfig {
    fn load(dir: &Path) -> Result<HfConfig> {
        let config_path = dir.join(TOKENIZER_CONFIG);
        let kwargs = read_json_object(&config_path)?.unwrap_or_default();
        let mut specials = HashMap::new();
        for key in SPECIAL_KEYS {
            if let Some(v) = kwargs.get(key) {
                specials.insert(key, parse_special(v, &config_path, false)?);
            }
        }
        let mut additional = match kwargs.get(ADDITIONAL) {
            Some(v) => parse_special_list(v, &config_path, false)?,
            None => None,
        };
        let mut added_decoder = BTreeMap::new();

        if let Some(dec) = kwargs.get("added_tokens_decoder") {
            let Value::Object(dec) = dec else {
                return Err(tok_err(
                    &config_path,
                    "\"added_tokens_decoder\" must be an object",
                ));
            };
            let mut by_content: HashMap<String, PyTok> = HashMap::new();
            for (idx, v) in dec {
                let id: u32 = idx.parse().map_err(|_| {
                    tok_err(
                        &config_path,
                        &format!("added_tokens_decoder key {idx:?} is not an id"),
                    )
                })?;
                let Value::Object(o) = v else {
                    return Err(tok_err(
                        &config_path,
                        &format!("added_tokens_decoder[{idx}] must be an object"),
                    ));
                };
                let t = PyTok::from_json(o, &config_path)?;
                by_content.insert(t.content.clone(), t.clone());
                added_decoder.insert(id, t);
            }
            // Special attributes given as strings take the AddedToken of the same
            // content from added_tokens_decoder.
            for v in specials.values_mut().flatten() {
                if let Some(t) = by_content.get(v.content()) {
                    *v = Special::Tok(t.clone());
                }
            }
        } else {
            // Legacy: special_tokens_map.json overrides tokenizer_config.json.
            let map_path = dir.join(SPECIAL_TOKENS_MAP);
            if let Some(map) = read_json_object(&map_path)? {
                for (key, v) in &map {
                    if key == ADDITIONAL {
                        let Some(list) = parse_special_list(v, &map_path, true)? else {
                            additional = None;
                            continue;
                        };
                        let mut merged = additional.take().unwrap_or_default();
                        for t in list {
                            if !merged.iter().any(|m| m.py_eq(&t)) {
                                merged.push(t);
                            }
                        }
                        additional = Some(merged);
                    } else if let Some(k) = SPECIAL_KEYS.iter().find(|k| **k == key) {
                        specials.insert(k, parse_special(v, &map_path, true)?);
                    }
                }
            }
            let added_path = dir.join(ADDED_TOKENS);
            if let Some(added) = read_json_object(&added_path)? {
                let special_strs: Vec<String> = specials
                    .values()
                    .flatten()
                    .chain(additional.iter().flatten())
                    .map(|s| s.content().to_string())
                    .collect();
                for (content, idx) in &added {
                    let id = idx
                        .as_u64()
                        .and_then(|i| u32::try_from(i).ok())
                        .ok_or_else(|| {
                            tok_err(
                                &added_path,
                                &format!("id of {content:?} is {idx}, expected an id"),
                            )
                        })?;
                    let special = special_strs.iter().any(|s| s == content);
                    added_decoder.insert(
                        id,
                        PyTok {
                            content: content.clone(),
                            single_word: None,
                            lstrip: Some(false),
                            rstrip: Some(false),
                            normalized: Some(!special),
                            special,
                        },
                    );
                }
            }
        }
        let extra = extra_special_tokens(&config_path)?;
        Ok(HfConfig {
            kwargs,
            specials,
            additional,
            extra,
            added_decoder,
            config_path,
        })
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.kwargs.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(tok_err(
                &self.config_path,
                &format!("\"{key}\" is {v}, expected a boolean"),
            )),
        }
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.kwargs.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(tok_err(
                &self.config_path,
                &format!("\"{key}\" is {v}, expected a boolean or null"),
            )),
        }
    }
}

fn kind_of_class(class: &str) -> Option<Kind> {
    let class = class.strip_suffix("Fast").unwrap_or(class);
    match class {
        // SLOW_TO_FAST_CONVERTERS entries whose slow class is (a copy of) BertTokenizer.
        "BertTokenizer"
        | "DistilBertTokenizer"
        | "ElectraTokenizer"
        | "ConvBertTokenizer"
        | "MobileBertTokenizer"
        | "SqueezeBertTokenizer"
        | "LayoutLMTokenizer"
        | "RetriBertTokenizer"
        | "RealmTokenizer"
        | "LxmertTokenizer"
        | "DPRReaderTokenizer"
        | "DPRQuestionEncoderTokenizer"
        | "DPRContextEncoderTokenizer" => Some(Kind::WordPiece),
        // ... whose slow class is (a copy of) RobertaTokenizer.
        "RobertaTokenizer"
        | "LongformerTokenizer"
        | "BartTokenizer"
        | "MvpTokenizer"
        | "LEDTokenizer" => Some(Kind::ByteLevelBpe),
        "AlbertTokenizer" => Some(Kind::Unigram),
        _ => None,
    }
}

fn kind_of_model_type(model_type: &str) -> Option<Kind> {
    match model_type {
        "bert" | "distilbert" | "electra" | "convbert" | "mobilebert" | "squeezebert"
        | "layoutlm" | "retribert" | "realm" | "lxmert" | "dpr" => Some(Kind::WordPiece),
        "roberta" | "longformer" | "bart" | "mvp" | "led" => Some(Kind::ByteLevelBpe),
        "albert" => Some(Kind::Unigram),
        _ => None,
    }
}

fn detect_kind(dir: &Path, cfg: &HfConfig) -> Result<Kind> {
    let has = |f: &str| dir.join(f).is_file();
    let by_files = || {
        if has(SPM_MODEL) {
            Some(Kind::Unigram)
        } else if has(BPE_VOCAB) && has(BPE_MERGES) {
            Some(Kind::ByteLevelBpe)
        } else if has(WP_VOCAB) {
            Some(Kind::WordPiece)
        } else {
            None
        }
    };
    let kind = if let Some(Value::String(class)) = cfg.kwargs.get("tokenizer_class") {
        kind_of_class(class).ok_or_else(|| {
            tok_err(
                &cfg.config_path,
                &format!(
                    "tokenizer_class {class:?} is not supported from legacy files \
                     (supported: BERT-style WordPiece, RoBERTa-style byte-level BPE, ALBERT)"
                ),
            )
        })?
    } else {
        let model_cfg = dir.join(MODEL_CONFIG);
        let model_type = read_json_object(&model_cfg).ok().flatten().and_then(|m| {
            m.get("model_type")
                .and_then(|v| v.as_str().map(str::to_string))
        });
        match model_type {
            Some(mt) => match kind_of_model_type(&mt) {
                Some(k) => k,
                None => {
                    return Err(tok_err(
                        &model_cfg,
                        &format!("model_type {mt:?} has no supported legacy tokenizer"),
                    ))
                }
            },
            None => by_files().ok_or_else(|| {
                Error::Tokenizer(format!(
                    "{}: no legacy tokenizer files ({WP_VOCAB}, {BPE_VOCAB} + {BPE_MERGES}, \
                     or {SPM_MODEL})",
                    dir.display()
                ))
            })?,
        }
    };
    let needed: &[&str] = match kind {
        Kind::WordPiece => &[WP_VOCAB],
        Kind::ByteLevelBpe => &[BPE_VOCAB, BPE_MERGES],
        Kind::Unigram => &[SPM_MODEL],
    };
    for f in needed {
        if !has(f) {
            return Err(Error::Tokenizer(format!(
                "{}: missing (needed for a {kind:?} tokenizer)",
                dir.join(f).display()
            )));
        }
    }
    Ok(kind)
}

// ---------------------------------------------------------------------------
// The slow tokenizer's special tokens
// ---------------------------------------------------------------------------

/// The special-token values the slow class passes to `PreTrainedTokenizer.__init__`
/// (after its defaults and AddedToken wrapping), deep-copied as
/// `init_kwargs`; these become the fast tokenizer's special tokens.
struct SlowSpecials {
    /// Per attribute, in SPECIAL_KEYS order; `None` = not set.
    values: Vec<(&'static str, Option<Special>)>,
    additional: Vec<Special>,
    extra: Vec<Special>,
}

impl SlowSpecials {
    fn new(kind: Kind, cfg: &HfConfig) -> SlowSpecials {
        let defaults: &[(&str, &str)] = match kind {
            Kind::WordPiece => &[
                ("unk_token", "[UNK]"),
                ("sep_token", "[SEP]"),
                ("pad_token", "[PAD]"),
                ("cls_token", "[CLS]"),
                ("mask_token", "[MASK]"),
            ],
            Kind::ByteLevelBpe => &[
                ("bos_token", "<s>"),
                ("eos_token", "</s>"),
                ("sep_token", "</s>"),
                ("cls_token", "<s>"),
                ("unk_token", "<unk>"),
                ("pad_token", "<pad>"),
                ("mask_token", "<mask>"),
            ],
            Kind::Unigram => &[
                ("bos_token", "[CLS]"),
                ("eos_token", "[SEP]"),
                ("unk_token", "<unk>"),
                ("sep_token", "[SEP]"),
                ("pad_token", "<pad>"),
                ("cls_token", "[CLS]"),
                ("mask_token", "[MASK]"),
            ],
        };
        let mut values = Vec::new();
        for key in SPECIAL_KEYS {
            let given = cfg.specials.get(key).cloned();
            let default = defaults.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
            let v = match (given, default) {
                (Some(v), _) => v,
                (None, Some(d)) => Some(Special::Str(d.to_string())),
                (None, None) => None,
            };
            // The slow classes wrap plain strings in AddedTokens.
            let v = v.map(|v| match (&v, kind, key) {
                (Special::Str(s), Kind::ByteLevelBpe | Kind::Unigram, "mask_token") => {
                    Special::Tok(PyTok {
                        lstrip: Some(true),
                        rstrip: Some(false),
                        normalized: Some(false),
                        ..PyTok::new(s)
                    })
                }
                (Special::Str(s), Kind::ByteLevelBpe, _) => Special::Tok(PyTok {
                    lstrip: Some(false),
                    rstrip: Some(false),
                    ..PyTok::new(s)
                }),
                _ => v,
            });
            values.push((key, v.map(|v| v.frozen())));
        }
        let additional = cfg
            .additional
            .iter()
            .flatten()
            .map(Special::frozen)
            .collect();
        let extra = cfg.extra.iter().map(Special::frozen).collect();
        SlowSpecials {
            values,
            additional,
            extra,
        }
    }

    fn get(&self, key: &str) -> Option<&Special> {
        self.values
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v.as_ref())
    }

    /// `all_special_tokens_extended`: attribute order, then additional tokens,
    /// then `extra_special_tokens`; empty values skipped, first occurrence of each content kept.
    fn extended(&self) -> Vec<Special> {
        let mut seen: Vec<String> = Vec::new();
        let mut out = Vec::new();
        let singles = self.values.iter().filter_map(|(_, v)| v.as_ref());
        for v in singles
            .chain(self.additional.iter())
            .chain(self.extra.iter())
        {
            if v.content().is_empty() || seen.iter().any(|s| s == v.content()) {
                continue;
            }
            seen.push(v.content().to_string());
            out.push(v.clone());
        }
        out
    }

    /// The ids the slow tokenizer gives to its tokens after `__init__`:
    /// `added_tokens_decoder` entries, then model vocab, then new ids for
    /// special tokens missing from both (in `all_special_tokens_extended` order).
    fn slow_ids(&self, vocab: &HashMap<String, u32>, cfg: &HfConfig) -> HashMap<String, u32> {
        let mut added: HashMap<String, u32> = HashMap::new();
        for (id, t) in &cfg.added_decoder {
            added.insert(t.content.clone(), *id);
        }
        // `len(get_vocab())`: model vocab plus added tokens that are not in it.
        let new_idx = vocab.len() + added.keys().filter(|k| !vocab.contains_key(*k)).count();
        let mut n_new = 0;
        for t in self.extended() {
            let c = t.content();
            if added.contains_key(c) {
                continue;
            }
            if let Some(&id) = vocab.get(c) {
                added.insert(c.to_string(), id);
            } else {
                added.insert(c.to_string(), (new_idx + n_new) as u32);
                n_new += 1;
            }
        }
        added
    }
}

/// `convert_tokens_to_ids` of the slow tokenizer, after its `__init__`.
fn slow_id(
    token: &str,
    slow_added: &HashMap<String, u32>,
    vocab: &HashMap<String, u32>,
    fallback: Option<u32>,
) -> Option<u32> {
    slow_added
        .get(token)
        .or_else(|| vocab.get(token))
        .copied()
        .or(fallback)
}

// ---------------------------------------------------------------------------
// Converters
// ---------------------------------------------------------------------------

fn model_err(file: &Path, e: impl std::fmt::Display) -> Error {
    tok_err(file, &e.to_string())
}

/// `load_vocab` of tokenization_bert.py: lines of the file read in text mode
/// (universal newlines), `rstrip("\n")`, id = line number, later duplicates win.
fn load_wordpiece_vocab(path: &Path) -> Result<HashMap<String, u32>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut vocab = HashMap::new();
    let mut lines: Vec<&str> = text.split('\n').collect();
    if text.ends_with('\n') || text.is_empty() {
        lines.pop();
    }
    for (i, line) in lines.into_iter().enumerate() {
        vocab.insert(line.to_string(), i as u32);
    }
    Ok(vocab)
}

fn special_content(slow: &SlowSpecials, key: &str, file: &Path) -> Result<String> {
    slow.get(key)
        .map(|s| s.content().to_string())
        .ok_or_else(|| {
            tok_err(
                file,
                &format!("no {key} is set, cannot build the post-processor"),
            )
        })
}

fn template(
    cls: &str,
    cls_id: u32,
    sep: &str,
    sep_id: u32,
    file: &Path,
) -> Result<TemplateProcessing> {
    TemplateProcessing::builder()
        .try_single(format!("{cls}:0 $A:0 {sep}:0"))
        .map_err(|e| model_err(file, e))?
        .try_pair(format!("{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1"))
        .map_err(|e| model_err(file, e))?
        .special_tokens(vec![(cls.to_string(), cls_id), (sep.to_string(), sep_id)])
        .build()
        .map_err(|e| model_err(file, e))
}

fn build_wordpiece(dir: &Path, cfg: &HfConfig, slow: &SlowSpecials) -> Result<Tokenizer> {
    let vocab_path = dir.join(WP_VOCAB);
    let vocab = load_wordpiece_vocab(&vocab_path)?;
    // `str(unk_token)`: "None" when unset, as in HF.
    let unk = slow
        .get("unk_token")
        .map(|s| s.content().to_string())
        .unwrap_or_else(|| "None".to_string());
    let model = WordPiece::builder()
        .vocab(
            vocab
                .clone()
                .into_iter()
                .collect::<tokenizers::models::bpe::Vocab>(),
        )
        .unk_token(unk.clone())
        .build()
        .map_err(|e| model_err(&vocab_path, e))?;
    let mut tok = Tokenizer::new(model);

    // BertTokenizerFast.__init__ leaves the normalizer with its own arguments.
    let lowercase = cfg.bool_or("do_lower_case", true)?;
    let strip_accents = cfg.opt_bool("strip_accents")?;
    let chinese = cfg.bool_or("tokenize_chinese_chars", true)?;
    tok.with_normalizer(Some(BertNormalizer::new(
        true,
        chinese,
        strip_accents,
        lowercase,
    )));
    tok.with_pre_tokenizer(Some(BertPreTokenizer));

    let slow_added = slow.slow_ids(&vocab, cfg);
    let unk_id = vocab.get(&unk).copied();
    let cls = special_content(slow, "cls_token", &cfg.config_path)?;
    let sep = special_content(slow, "sep_token", &cfg.config_path)?;
    let id = |t: &str| {
        slow_id(t, &slow_added, &vocab, unk_id)
            .ok_or_else(|| tok_err(&vocab_path, &format!("{t:?} has no id (and no unk token)")))
    };
    let post = template(&cls, id(&cls)?, &sep, id(&sep)?, &cfg.config_path)?;
    tok.with_post_processor(Some(post));
    tok.with_decoder(Some(WordPieceDecoder::new("##".to_string(), true)));
    Ok(tok)
}

/// `RobertaTokenizer.__init__`: `read().split("\n")[1:-1]` (first line is the
/// version header, the last piece is dropped), each line `split()` on
/// whitespace; the converter passes `list(bpe_ranks)`, i.e. the first
/// occurrence of each pair, in file order.
fn load_merges(path: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let lines: Vec<&str> = text.split('\n').collect();
    let body = if lines.len() >= 2 {
        &lines[1..lines.len() - 1]
    } else {
        &[][..]
    };
    let mut seen = std::collections::HashSet::new();
    let mut merges = Vec::new();
    for (i, line) in body.iter().enumerate() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if parts.len() != 2 {
            return Err(tok_err(
                path,
                &format!("line {}: expected two tokens, found {}", i + 2, parts.len()),
            ));
        }
        let pair = (parts[0].to_string(), parts[1].to_string());
        if seen.insert(pair.clone()) {
            merges.push(pair);
        }
    }
    Ok(merges)
}

fn load_bpe_vocab(path: &Path) -> Result<HashMap<String, u32>> {
    let map = read_json_object(path)?.ok_or_else(|| tok_err(path, "missing"))?;
    let mut vocab = HashMap::new();
    for (k, v) in map {
        let id = v
            .as_u64()
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| tok_err(path, &format!("id of {k:?} is {v}, expected an id")))?;
        vocab.insert(k, id);
    }
    Ok(vocab)
}

fn build_bpe(dir: &Path, cfg: &HfConfig, slow: &SlowSpecials) -> Result<Tokenizer> {
    let vocab_path = dir.join(BPE_VOCAB);
    let merges_path = dir.join(BPE_MERGES);
    let vocab = load_bpe_vocab(&vocab_path)?;
    let merges = load_merges(&merges_path)?;
    let model = BPE::builder()
        .vocab_and_merges(
            vocab
                .clone()
                .into_iter()
                .collect::<tokenizers::models::bpe::Vocab>(),
            merges,
        )
        .continuing_subword_prefix(String::new())
        .end_of_word_suffix(String::new())
        .fuse_unk(false)
        .build()
        .map_err(|e| model_err(&merges_path, e))?;
    let mut tok = Tokenizer::new(model);

    let add_prefix_space = cfg.bool_or("add_prefix_space", false)?;
    let trim_offsets = cfg.bool_or("trim_offsets", true)?;
    tok.with_pre_tokenizer(Some(ByteLevel::new(add_prefix_space, true, true)));
    tok.with_decoder(Some(ByteLevelDecoder::default()));

    let slow_added = slow.slow_ids(&vocab, cfg);
    let unk_id = slow
        .get("unk_token")
        .and_then(|u| slow_id(u.content(), &slow_added, &vocab, None));
    let cls = special_content(slow, "cls_token", &cfg.config_path)?;
    let sep = special_content(slow, "sep_token", &cfg.config_path)?;
    let id = |t: &str| {
        slow_id(t, &slow_added, &vocab, unk_id)
            .ok_or_else(|| tok_err(&vocab_path, &format!("{t:?} has no id (and no unk token)")))
    };
    let post = RobertaProcessing::new((sep.clone(), id(&sep)?), (cls.clone(), id(&cls)?))
        .trim_offsets(trim_offsets)
        .add_prefix_space(add_prefix_space);
    tok.with_post_processor(Some(post));
    Ok(tok)
}

/// Python's `str.isdigit()` (Numeric_Type Digit or Decimal), Unicode 14
/// (Python 3.11), as ranges.
#[rustfmt::skip]
const PY_DIGITS: &[(u32, u32)] = &[
    (0x30, 0x39), (0xB2, 0xB3), (0xB9, 0xB9), (0x660, 0x669), (0x6F0, 0x6F9), (0x7C0, 0x7C9),
    (0x966, 0x96F), (0x9E6, 0x9EF), (0xA66, 0xA6F), (0xAE6, 0xAEF), (0xB66, 0xB6F),
    (0xBE6, 0xBEF), (0xC66, 0xC6F), (0xCE6, 0xCEF), (0xD66, 0xD6F), (0xDE6, 0xDEF),
    (0xE50, 0xE59), (0xED0, 0xED9), (0xF20, 0xF29), (0x1040, 0x1049), (0x1090, 0x1099),
    (0x1369, 0x1371), (0x17E0, 0x17E9), (0x1810, 0x1819), (0x1946, 0x194F), (0x19D0, 0x19DA),
    (0x1A80, 0x1A89), (0x1A90, 0x1A99), (0x1B50, 0x1B59), (0x1BB0, 0x1BB9), (0x1C40, 0x1C49),
    (0x1C50, 0x1C59), (0x2070, 0x2070), (0x2074, 0x2079), (0x2080, 0x2089), (0x2460, 0x2468),
    (0x2474, 0x247C), (0x2488, 0x2490), (0x24EA, 0x24EA), (0x24F5, 0x24FD), (0x24FF, 0x24FF),
    (0x2776, 0x277E), (0x2780, 0x2788), (0x278A, 0x2792), (0xA620, 0xA629), (0xA8D0, 0xA8D9),
    (0xA900, 0xA909), (0xA9D0, 0xA9D9), (0xA9F0, 0xA9F9), (0xAA50, 0xAA59), (0xABF0, 0xABF9),
    (0xFF10, 0xFF19), (0x104A0, 0x104A9), (0x10A40, 0x10A43), (0x10D30, 0x10D39),
    (0x10E60, 0x10E68), (0x11052, 0x1105A), (0x11066, 0x1106F), (0x110F0, 0x110F9),
    (0x11136, 0x1113F), (0x111D0, 0x111D9), (0x112F0, 0x112F9), (0x11450, 0x11459),
    (0x114D0, 0x114D9), (0x11650, 0x11659), (0x116C0, 0x116C9), (0x11730, 0x11739),
    (0x118E0, 0x118E9), (0x11950, 0x11959), (0x11C50, 0x11C59), (0x11D50, 0x11D59),
    (0x11DA0, 0x11DA9), (0x16A60, 0x16A69), (0x16AC0, 0x16AC9), (0x16B50, 0x16B59),
    (0x1D7CE, 0x1D7FF), (0x1E140, 0x1E149), (0x1E2F0, 0x1E2F9), (0x1E950, 0x1E959),
    (0x1F100, 0x1F10A), (0x1FBF0, 0x1FBF9),
];

fn py_isdigit(c: char) -> bool {
    let c = c as u32;
    PY_DIGITS.iter().any(|&(lo, hi)| lo <= c && c <= hi)
}

/// `check_number_comma` of convert_slow_tokenizer.py.
fn check_number_comma(piece: &str) -> bool {
    let chars: Vec<char> = piece.chars().collect();
    let n = chars.len();
    n < 2 || chars[n - 1] != ',' || !py_isdigit(chars[n - 2])
}

fn build_unigram(dir: &Path, cfg: &HfConfig, slow: &SlowSpecials) -> Result<Tokenizer> {
    let path = dir.join(SPM_MODEL);
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let proto = spm_proto::parse_model(&bytes).map_err(|e| tok_err(&path, &e))?;
    if proto.model_type != spm_proto::MODEL_UNIGRAM {
        return Err(tok_err(
            &path,
            &format!(
                "sentencepiece model type {} is not Unigram (only Unigram models are supported)",
                proto.model_type
            ),
        ));
    }
    // AlbertConverter.vocab: pieces like "1," get their score lowered by 100.
    let vocab: Vec<(String, f64)> = proto
        .pieces
        .iter()
        .map(|p| {
            let s = f64::from(p.score);
            let s = if check_number_comma(&p.piece) {
                s
            } else {
                s - 100.0
            };
            (p.piece.clone(), s)
        })
        .collect();
    let unk_id = usize::try_from(proto.unk_id)
        .map_err(|_| tok_err(&path, &format!("unk_id {} is negative", proto.unk_id)))?;
    let model = Unigram::from(vocab, Some(unk_id), false).map_err(|e| model_err(&path, e))?;
    let mut tok = Tokenizer::new(model);

    // SpmConverter.tokenizer: control (special) and user-defined pieces are added tokens.
    let spm_added: Vec<AddedToken> = proto
        .pieces
        .iter()
        .filter(|p| p.kind == spm_proto::PIECE_CONTROL || p.kind == spm_proto::PIECE_USER_DEFINED)
        .map(|p| {
            AddedToken::from(p.piece.clone(), p.kind == spm_proto::PIECE_CONTROL).normalized(false)
        })
        .collect();
    if !spm_added.is_empty() {
        tok.add_tokens(&spm_added);
    }

    // AlbertConverter.normalizer
    let keep_accents = cfg.bool_or("keep_accents", false)?;
    let lowercase = cfg.bool_or("do_lower_case", true)?;
    let re = |e| model_err(&path, e);
    let mut norms: Vec<NormalizerWrapper> = vec![
        Replace::new("``", "\"").map_err(re)?.into(),
        Replace::new("''", "\"").map_err(re)?.into(),
    ];
    if !keep_accents {
        norms.push(NFKD.into());
        norms.push(StripAccents.into());
    }
    if lowercase {
        norms.push(Lowercase.into());
    }
    if !proto.precompiled_charsmap.is_empty() {
        let pc = Precompiled::from(&proto.precompiled_charsmap)
            .map_err(|e| tok_err(&path, &format!("precompiled_charsmap: {e}")))?;
        norms.push(pc.into());
    }
    norms.push(
        Replace::new(ReplacePattern::Regex(" {2,}".to_string()), " ")
            .map_err(re)?
            .into(),
    );
    tok.with_normalizer(Some(Sequence::new(norms)));

    // The slow AlbertTokenizer has no `add_prefix_space` / `legacy` attributes:
    // prepend_scheme "always".
    tok.with_pre_tokenizer(Some(Metaspace::new('▁', PrependScheme::Always, true)));
    tok.with_decoder(Some(Metaspace::new('▁', PrependScheme::Always, true)));

    // AlbertConverter.post_processor uses the literal "[CLS]" / "[SEP]".
    let sp_vocab: HashMap<String, u32> = {
        let mut m = HashMap::new();
        for (i, p) in proto.pieces.iter().enumerate() {
            m.entry(p.piece.clone()).or_insert(i as u32);
        }
        m
    };
    let slow_added = slow.slow_ids(&sp_vocab, cfg);
    let unk = unk_id as u32;
    let cls_id = slow_id("[CLS]", &slow_added, &sp_vocab, Some(unk)).unwrap_or(unk);
    let sep_id = slow_id("[SEP]", &slow_added, &sp_vocab, Some(unk)).unwrap_or(unk);
    tok.with_post_processor(Some(template("[CLS]", cls_id, "[SEP]", sep_id, &path)?));
    Ok(tok)
}

// ---------------------------------------------------------------------------
// PreTrainedTokenizerFast.__init__: added / special tokens
// ---------------------------------------------------------------------------

fn add_fast_tokens(tok: &mut Tokenizer, cfg: &HfConfig, slow: &SlowSpecials) {
    // Tokens the converted backend already has (sentencepiece control /
    // user-defined pieces), compared by repr, i.e. content and all flags.
    let backend: Vec<AddedToken> = {
        let dec = tok.get_added_tokens_decoder();
        let mut ids: Vec<_> = dec.keys().copied().collect();
        ids.sort_unstable();
        ids.into_iter().map(|i| dec[&i].clone()).collect()
    };
    let mut to_add: Vec<Special> = cfg
        .added_decoder
        .values()
        .filter(|t| !backend.contains(&t.resolve()))
        .map(|t| Special::Tok(t.clone()))
        .collect();
    let encoder: Vec<String> = backend
        .iter()
        .map(|t| t.content.clone())
        .chain(to_add.iter().map(|t| t.content().to_string()))
        .collect();
    let extended = slow.extended();
    for t in &extended {
        // A str is "in" the list of contents by value; an AddedToken never is.
        let in_encoder = matches!(t, Special::Str(s) if encoder.contains(s));
        if !in_encoder && !to_add.iter().any(|a| a.py_eq(t)) {
            to_add.push(t.clone());
        }
    }
    let special_strs: Vec<&str> = extended.iter().map(Special::content).collect();
    let tokens: Vec<AddedToken> = to_add
        .iter()
        .map(|t| match t {
            Special::Str(s) => PyTok {
                special: special_strs.contains(&s.as_str()),
                ..PyTok::new(s)
            }
            .resolve(),
            Special::Tok(p) => PyTok {
                special: p.special || special_strs.contains(&p.content.as_str()),
                ..p.clone()
            }
            .resolve(),
        })
        .collect();
    if !tokens.is_empty() {
        tok.add_tokens(&tokens);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("bertrt_legacy_{name}_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn number_comma_check_matches_python() {
        assert!(check_number_comma("a"));
        assert!(check_number_comma("a,"));
        assert!(!check_number_comma("1,"));
        assert!(!check_number_comma("▁10,"));
        assert!(!check_number_comma("²,")); // str.isdigit() is true for superscripts
        assert!(check_number_comma("½,")); // ... but not for fractions
        assert!(check_number_comma("1,2"));
    }

    #[test]
    fn py_added_token_flags_resolve_like_python() {
        let t = PyTok::new("<s>");
        assert!(t.resolve().normalized); // not special -> normalized
        let frozen = t.frozen();
        assert_eq!(frozen.normalized, Some(true));
        // Marking a deep-copied token special no longer changes `normalized`.
        let special = PyTok {
            special: true,
            ..frozen
        };
        assert!(special.resolve().normalized);
        let fresh = PyTok {
            special: true,
            ..PyTok::new("<s>")
        };
        assert!(!fresh.resolve().normalized);
        assert!(!Special::Str("x".into()).py_eq(&Special::Tok(PyTok::new("x"))));
    }

    #[test]
    fn merges_and_vocab_are_read_like_the_slow_tokenizers() {
        let d = temp_dir("files");
        let m = d.join("merges.txt");
        std::fs::write(&m, "#version: 0.2\na b\nab c\na b\nx y").unwrap();
        // `split("\n")[1:-1]`: the last line is dropped even without a final newline.
        assert_eq!(
            load_merges(&m).unwrap(),
            vec![("a".into(), "b".into()), ("ab".into(), "c".into())]
        );
        let v = d.join("vocab.txt");
        std::fs::write(&v, "[PAD]\r\n[UNK]\r\nhello\r\n[UNK]\r\n").unwrap();
        let vocab = load_wordpiece_vocab(&v).unwrap();
        assert_eq!(vocab.len(), 3);
        assert_eq!(vocab["[UNK]"], 3); // later duplicates win
        assert_eq!(vocab["hello"], 2);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn builds_a_bert_tokenizer_from_vocab_txt_only() {
        let d = temp_dir("bert");
        let words = [
            "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "##s", "cafe",
        ];
        std::fs::write(d.join("vocab.txt"), words.join("\n") + "\n").unwrap();
        let tok = from_legacy_files(&d).unwrap();
        assert!(tok.get_padding().is_none() && tok.get_truncation().is_none());
        let e = tok.encode(("Hello WORLDs [MASK]", "Café?"), true).unwrap();
        assert_eq!(e.get_ids(), &[2, 5, 6, 7, 4, 3, 8, 1, 3]);
        assert_eq!(e.get_type_ids(), &[0, 0, 0, 0, 0, 0, 1, 1, 1]);
        // [CLS] etc. are added special tokens, matched before normalization.
        assert_eq!(tok.get_added_vocabulary().len(), 5);
        std::fs::write(
            d.join("tokenizer_config.json"),
            r#"{"tokenizer_class": "MPNetTokenizer"}"#,
        )
        .unwrap();
        let err = from_legacy_files(&d).unwrap_err().to_string();
        assert!(
            err.contains("tokenizer_config.json") && err.contains("MPNetTokenizer"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}

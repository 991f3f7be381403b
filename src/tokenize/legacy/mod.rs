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

mod added;
mod bpe;
mod hf_config;
mod specials;
#[cfg(test)]
mod tests;
mod unigram;
mod wordpiece;

use crate::error::{Error, Result};
use added::*;
use bpe::*;
pub(crate) use hf_config::HfConfig;
use hf_config::*;
use specials::*;
use unigram::*;
use wordpiece::*;

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
    Ok(build(dir, &HfConfig::load(dir)?)?.0)
}

/// Whether `dir` has any of the legacy tokenizer files.
pub(crate) fn has_legacy_files(dir: &Path) -> bool {
    [WP_VOCAB, BPE_VOCAB, SPM_MODEL]
        .iter()
        .any(|f| dir.join(f).is_file())
}

/// [`from_legacy_files`] with the configuration files already read, also
/// saying which kind of tokenizer the files (or `tokenizer_class`) chose.
pub(crate) fn build(dir: &Path, cfg: &HfConfig) -> Result<(Tokenizer, super::TokenizerKind)> {
    let kind = detect_kind(dir, cfg)?;
    let slow = SlowSpecials::new(kind, cfg);
    let mut tok = match kind {
        Kind::WordPiece => build_wordpiece(dir, cfg, &slow)?,
        Kind::ByteLevelBpe => build_bpe(dir, cfg, &slow)?,
        Kind::Unigram => build_unigram(dir, cfg, &slow)?,
    };
    add_fast_tokens(&mut tok, cfg, &slow);
    // PreTrainedTokenizerFast: `encode_special_tokens = split_special_tokens`.
    tok.set_encode_special_tokens(cfg.bool_or("split_special_tokens", false)?);
    tok.with_padding(None);
    tok.with_truncation(None)
        .map_err(|e| Error::Tokenizer(format!("{}: {e}", dir.display())))?;
    let public = match kind {
        Kind::WordPiece => super::TokenizerKind::WordPiece,
        Kind::ByteLevelBpe => super::TokenizerKind::Bpe,
        Kind::Unigram => super::TokenizerKind::SentencePiece,
    };
    Ok((tok, public))
}

// ---------------------------------------------------------------------------
// Converters
// ---------------------------------------------------------------------------

fn model_err(file: &Path, e: impl std::fmt::Display) -> Error {
    tok_err(file, &e.to_string())
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

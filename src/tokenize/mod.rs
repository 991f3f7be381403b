//! Tokenization identical to HF's: `tokenizer.json` through the `tokenizers`
//! crate, or the same tokenizer rebuilt from legacy files (see [`legacy`]).
//!
//! Padding and truncation settings inside a tokenizer file are ignored: the
//! engine packs sequences itself, and truncation is decided per call.

pub mod legacy;
mod spm_proto;

use crate::error::{Error, Result};
use crate::panic_guard::catch_quietly;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use tokenizers::{TruncationDirection, TruncationParams, TruncationStrategy};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenizerKind {
    /// tokenizer.json
    Json,
    /// vocab.txt (WordPiece)
    WordPiece,
    /// vocab.json + merges.txt (byte-level BPE)
    Bpe,
    /// spiece.model (SentencePiece Unigram)
    SentencePiece,
}

impl TokenizerKind {
    pub fn describe(self) -> &'static str {
        match self {
            TokenizerKind::Json => "tokenizer.json",
            TokenizerKind::WordPiece => "WordPiece (vocab.txt)",
            TokenizerKind::Bpe => "byte-level BPE (vocab.json + merges.txt)",
            TokenizerKind::SentencePiece => "SentencePiece Unigram (spiece.model)",
        }
    }
}

/// What to do with an input longer than the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truncation {
    /// Cut the longest sequence first, as HF's `truncation=True`.
    LongestFirst,
    /// The same, cutting tokens from the start of the text instead of its
    /// end (HF's `truncation_side="left"`, TEI's `truncation_direction`).
    LongestFirstLeft,
    /// Refuse the input.
    Error,
}

/// One encoded input, with HF's conventions: character offsets into the
/// text they came from, `(0, 0)` for special tokens.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    pub tokens: Vec<String>,
    pub offsets: Vec<(usize, usize)>,
    /// Which input each token came from: Some(0) text, Some(1) pair, None special.
    pub sequence_ids: Vec<Option<usize>>,
    /// Tokens removed by truncation (0 when nothing was cut).
    pub truncated_tokens: usize,
}

/// An encoding as HF's tokenizer call returns it (the fields `bertrt
/// tokenize` prints and the Python package's `Engine.tokenize` returns).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Tokenized {
    pub tokens: Vec<String>,
    pub input_ids: Vec<u32>,
    pub token_type_ids: Vec<u32>,
    pub attention_mask: Vec<u32>,
    pub offsets: Vec<(usize, usize)>,
}

impl From<Encoded> for Tokenized {
    /// Unpadded, so the attention mask is all ones.
    fn from(e: Encoded) -> Tokenized {
        Tokenized {
            attention_mask: vec![1; e.ids.len()],
            tokens: e.tokens,
            input_ids: e.ids,
            token_type_ids: e.type_ids,
            offsets: e.offsets,
        }
    }
}

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pub kind: TokenizerKind,
    pub mask_token: Option<String>,
    /// What tokenizer_config.json (& co) say, read once at load.
    pub settings: TokenizerSettings,
    /// Truncating copies of `inner`, one per limit and side asked for.
    truncating: Mutex<HashMap<(usize, bool), tokenizers::Tokenizer>>,
}

impl Tokenizer {
    /// Loads the tokenizer of a model folder.
    pub fn from_dir(dir: &Path) -> Result<Tokenizer> {
        let json = dir.join("tokenizer.json");
        // tokenizer_config.json & co, parsed once with HF's precedence.
        let cfg = legacy::HfConfig::load(dir)?;
        let (mut inner, kind) = if json.is_file() {
            // tokenizers 0.22 panics on some malformed files (a `decoder`
            // of no known type: decoders/mod.rs `expect("Helper")`).
            let t = catch_quietly(|| tokenizers::Tokenizer::from_file(&json))
                .map_err(|panic| {
                    Error::Tokenizer(format!(
                        "{}: the tokenizers crate failed on this file: {panic}",
                        json.display()
                    ))
                })?
                .map_err(|e| Error::Tokenizer(format!("{}: {e}", json.display())))?;
            (t, TokenizerKind::Json)
        } else if legacy::has_legacy_files(dir) {
            legacy::build(dir, &cfg)?
        } else {
            return Err(Error::Tokenizer(format!(
                "{}: no tokenizer files (tokenizer.json, vocab.txt, vocab.json + merges.txt, or spiece.model)",
                dir.display()
            )));
        };
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        // The tokenizers crate checks parts of a file only when they are used
        // (a post-processor template naming a special token the file does not
        // define panics on the first encode): use every part once here, so a
        // bad file fails at load, naming the file. Errors are left to encode.
        catch_quietly(|| {
            for input in [
                tokenizers::EncodeInput::from("a b"),
                tokenizers::EncodeInput::from(("a", "b")),
            ] {
                if let Ok(e) = inner.encode_char_offsets(input, true) {
                    let _ = inner.decode(e.get_ids(), false);
                }
            }
        })
        .map_err(|panic| {
            let file = if kind == TokenizerKind::Json {
                json.clone()
            } else {
                dir.to_path_buf()
            };
            Error::Tokenizer(format!(
                "{}: the tokenizers crate failed using this tokenizer: {panic}",
                file.display()
            ))
        })?;
        let settings = cfg.settings();
        let mask_token = settings
            .special("mask_token")
            .map(str::to_string)
            .or_else(|| {
                ["[MASK]", "<mask>"]
                    .iter()
                    .find(|t| inner.token_to_id(t).is_some())
                    .map(|t| t.to_string())
            });
        Ok(Tokenizer {
            inner,
            kind,
            mask_token,
            settings,
            truncating: Mutex::new(HashMap::new()),
        })
    }

    /// The underlying `tokenizers` tokenizer (no padding, no truncation), for
    /// tasks that need its overflow/stride machinery (QA windows).
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }
    pub fn mask_id(&self) -> Option<u32> {
        self.mask_token.as_deref().and_then(|t| self.token_to_id(t))
    }
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// HF's `convert_tokens_to_string` for fast tokenizers: the decoder alone,
    /// no clean-up.
    pub fn tokens_to_string(&self, tokens: Vec<String>) -> Result<String> {
        use tokenizers::Decoder;
        match self.inner.get_decoder() {
            Some(d) => d
                .decode(tokens)
                .map_err(|e| Error::Tokenizer(format!("decoding tokens: {e}"))),
            None => Ok(tokens.join(" ")),
        }
    }

    /// Text of `ids` as HF's `decode` gives it.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        let text = self
            .inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| Error::Tokenizer(format!("decoding {ids:?}: {e}")))?;
        Ok(if self.settings.clean_up_tokenization_spaces {
            clean_up_tokenization(&text)
        } else {
            text
        })
    }

    /// Encodes `text` (and `pair`) with special tokens, at most `max_len`
    /// tokens in all.
    pub fn encode(
        &self,
        text: &str,
        pair: Option<&str>,
        max_len: usize,
        truncation: Truncation,
    ) -> Result<Encoded> {
        let full = self.encode_with(&self.inner, text, pair)?;
        if full.ids.len() <= max_len {
            return Ok(full);
        }
        if truncation == Truncation::Error {
            return Err(Error::Input(format!(
                "input has {} tokens, more than the limit of {max_len} (truncation is off)",
                full.ids.len()
            )));
        }
        let left = truncation == Truncation::LongestFirstLeft;
        let mut cache = self.truncating.lock().unwrap_or_else(|p| p.into_inner());
        let t = match cache.entry((max_len, left)) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let mut t = self.inner.clone();
                t.with_truncation(Some(TruncationParams {
                    max_length: max_len,
                    strategy: TruncationStrategy::LongestFirst,
                    stride: 0,
                    direction: if left {
                        TruncationDirection::Left
                    } else {
                        TruncationDirection::Right
                    },
                }))
                .map_err(|e| Error::Input(format!("cannot truncate to {max_len} tokens: {e}")))?;
                v.insert(t)
            }
        };
        let mut enc = self.encode_with(t, text, pair)?;
        enc.truncated_tokens = full.ids.len() - enc.ids.len();
        Ok(enc)
    }

    fn encode_with(
        &self,
        t: &tokenizers::Tokenizer,
        text: &str,
        pair: Option<&str>,
    ) -> Result<Encoded> {
        // A panic left in the tokenizers crate (text-dependent, so not seen
        // at load) becomes an error about this input.
        let e = catch_quietly(|| match pair.filter(|p| !p.is_empty()) {
            None => t.encode_char_offsets(text, true),
            Some(p) => t.encode_char_offsets((text, p), true),
        })
        .map_err(|panic| {
            Error::Tokenizer(format!(
                "encoding {text:?}: tokenizers crate failed: {panic}"
            ))
        })?
        .map_err(|e| Error::Tokenizer(format!("encoding {text:?}: {e}")))?;
        Ok(Encoded {
            ids: e.get_ids().to_vec(),
            type_ids: e.get_type_ids().to_vec(),
            // What HF's tokenize() returns: an unknown Unigram piece keeps
            // its text ("é"); convert_ids_to_tokens would say "<unk>".
            tokens: e.get_tokens().to_vec(),
            offsets: e.get_offsets().to_vec(),
            sequence_ids: e.get_sequence_ids(),
            truncated_tokens: 0,
        })
    }
}

/// HF's `clean_up_tokenization`: drop the space before punctuation and
/// English contractions.
fn clean_up_tokenization(s: &str) -> String {
    let mut out = s.to_string();
    for (from, to) in [
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ] {
        out = out.replace(from, to);
    }
    out
}

/// The settings the engine reads from tokenizer_config.json and
/// special_tokens_map.json (HF's precedence between them: [`legacy::HfConfig`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenizerSettings {
    /// `model_max_length`; None when absent or HF's 1e30 "no limit".
    pub model_max_length: Option<usize>,
    /// `padding_side == "left"` (the QA pipeline then puts the context first).
    pub pads_left: bool,
    /// `clean_up_tokenization_spaces`, applied by [`Tokenizer::decode`].
    pub clean_up_tokenization_spaces: bool,
    pub(crate) specials: HashMap<&'static str, String>,
}

impl TokenizerSettings {
    /// A special token's text (`cls_token`, `mask_token`, ...), if the files name one.
    pub fn special(&self, key: &str) -> Option<&str> {
        self.specials.get(key).map(String::as_str)
    }
}

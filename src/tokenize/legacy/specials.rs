//! The slow tokenizer's special tokens and their ids.

use super::*;

// ---------------------------------------------------------------------------
// The slow tokenizer's special tokens
// ---------------------------------------------------------------------------

/// The special-token values the slow class passes to `PreTrainedTokenizer.__init__`
/// (after its defaults and AddedToken wrapping), deep-copied as
/// `init_kwargs`; these become the fast tokenizer's special tokens.
pub(super) struct SlowSpecials {
    /// Per attribute, in SPECIAL_KEYS order; `None` = not set.
    pub(super) values: Vec<(&'static str, Option<Special>)>,
    pub(super) additional: Vec<Special>,
    pub(super) extra: Vec<Special>,
}

impl SlowSpecials {
    pub(super) fn new(kind: Kind, cfg: &HfConfig) -> SlowSpecials {
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

    pub(super) fn get(&self, key: &str) -> Option<&Special> {
        self.values
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v.as_ref())
    }

    /// `all_special_tokens_extended`: attribute order, then additional tokens,
    /// then `extra_special_tokens`; empty values skipped, first occurrence of each content kept.
    pub(super) fn extended(&self) -> Vec<Special> {
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
    pub(super) fn slow_ids(
        &self,
        vocab: &HashMap<String, u32>,
        cfg: &HfConfig,
    ) -> HashMap<String, u32> {
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
pub(super) fn slow_id(
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

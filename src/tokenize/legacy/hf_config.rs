//! The configuration files (`tokenizer_config.json`, `special_tokens_map.json`,
//! `added_tokens.json`, `config.json`) with HF's precedence, and which slow
//! tokenizer class they select.

use super::*;

// ---------------------------------------------------------------------------
// Configuration files
// ---------------------------------------------------------------------------

/// What `_from_pretrained` hands to the tokenizer class: tokenizer_config.json,
/// special_tokens_map.json and added_tokens.json with HF's precedence, read
/// once per folder (for legacy files and tokenizer.json folders alike).
pub(crate) struct HfConfig {
    /// tokenizer_config.json (empty when absent).
    pub(super) kwargs: Map<String, Value>,
    /// Special-token attributes that were given (`None` = explicitly null).
    pub(super) specials: HashMap<&'static str, Option<Special>>,
    pub(super) additional: Option<Vec<Special>>,
    /// `extra_special_tokens` (named model-specific special tokens), in file order.
    pub(super) extra: Vec<Special>,
    /// `added_tokens_decoder`: from tokenizer_config.json or added_tokens.json.
    pub(super) added_decoder: BTreeMap<u32, PyTok>,
    pub(super) config_path: PathBuf,
}

pub(super) fn tok_err(file: &Path, msg: &str) -> Error {
    Error::Tokenizer(format!("{}: {msg}", file.display()))
}

pub(super) fn read_json_object(path: &Path) -> Result<Option<Map<String, Value>>> {
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

pub(super) fn parse_special(
    v: &Value,
    file: &Path,
    force_special: bool,
) -> Result<Option<Special>> {
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

pub(super) fn parse_special_list(
    v: &Value,
    file: &Path,
    force_special: bool,
) -> Result<Option<Vec<Special>>> {
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
pub(super) fn extra_special_tokens(config_path: &Path) -> Result<Vec<Special>> {
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
    pub(crate) fn load(dir: &Path) -> Result<HfConfig> {
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

    pub(super) fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.kwargs.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(tok_err(
                &self.config_path,
                &format!("\"{key}\" is {v}, expected a boolean"),
            )),
        }
    }

    pub(super) fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
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

pub(super) fn kind_of_class(class: &str) -> Option<Kind> {
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

pub(super) fn kind_of_model_type(model_type: &str) -> Option<Kind> {
    match model_type {
        "bert" | "distilbert" | "electra" | "convbert" | "mobilebert" | "squeezebert"
        | "layoutlm" | "retribert" | "realm" | "lxmert" | "dpr" => Some(Kind::WordPiece),
        "roberta" | "longformer" | "bart" | "mvp" | "led" => Some(Kind::ByteLevelBpe),
        "albert" => Some(Kind::Unigram),
        _ => None,
    }
}

pub(super) fn detect_kind(dir: &Path, cfg: &HfConfig) -> Result<Kind> {
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

impl HfConfig {
    /// What the engine itself reads from these files.
    pub(crate) fn settings(&self) -> crate::tokenize::TokenizerSettings {
        let k = &self.kwargs;
        crate::tokenize::TokenizerSettings {
            // HF writes 1e30 for "no limit".
            model_max_length: k
                .get("model_max_length")
                .and_then(Value::as_f64)
                .filter(|&m| m < 1e15)
                .map(|m| m as usize),
            pads_left: k.get("padding_side").and_then(Value::as_str) == Some("left"),
            clean_up_tokenization_spaces: k
                .get("clean_up_tokenization_spaces")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            specials: self
                .specials
                .iter()
                .filter_map(|(&key, v)| Some((key, v.as_ref()?.content().to_string())))
                .collect(),
        }
    }
}

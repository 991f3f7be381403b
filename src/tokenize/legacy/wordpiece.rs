//! `BertConverter`: vocab.txt -> WordPiece.

use super::*;

/// `load_vocab` of tokenization_bert.py: lines of the file read in text mode
/// (universal newlines), `rstrip("\n")`, id = line number, later duplicates win.
pub(super) fn load_wordpiece_vocab(path: &Path) -> Result<HashMap<String, u32>> {
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

pub(super) fn build_wordpiece(
    dir: &Path,
    cfg: &HfConfig,
    slow: &SlowSpecials,
) -> Result<Tokenizer> {
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

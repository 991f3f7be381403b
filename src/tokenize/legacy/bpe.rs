//! `RobertaConverter`: vocab.json + merges.txt -> byte-level BPE.

use super::*;

/// `RobertaTokenizer.__init__`: `read().split("\n")[1:-1]` (first line is the
/// version header, the last piece is dropped), each line `split()` on
/// whitespace; the converter passes `list(bpe_ranks)`, i.e. the first
/// occurrence of each pair, in file order.
pub(super) fn load_merges(path: &Path) -> Result<Vec<(String, String)>> {
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

pub(super) fn load_bpe_vocab(path: &Path) -> Result<HashMap<String, u32>> {
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

pub(super) fn build_bpe(dir: &Path, cfg: &HfConfig, slow: &SlowSpecials) -> Result<Tokenizer> {
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

//! `AlbertConverter`: spiece.model -> SentencePiece Unigram.

use super::*;

/// Python's `str.isdigit()` (Numeric_Type Digit or Decimal), Unicode 14
/// (Python 3.11), as ranges.
#[rustfmt::skip]
pub(super) const PY_DIGITS: &[(u32, u32)] = &[
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

pub(super) fn py_isdigit(c: char) -> bool {
    let c = c as u32;
    PY_DIGITS.iter().any(|&(lo, hi)| lo <= c && c <= hi)
}

/// `check_number_comma` of convert_slow_tokenizer.py.
pub(super) fn check_number_comma(piece: &str) -> bool {
    let chars: Vec<char> = piece.chars().collect();
    let n = chars.len();
    n < 2 || chars[n - 1] != ',' || !py_isdigit(chars[n - 2])
}

pub(super) fn build_unigram(dir: &Path, cfg: &HfConfig, slow: &SlowSpecials) -> Result<Tokenizer> {
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

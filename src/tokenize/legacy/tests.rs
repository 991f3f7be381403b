//! The legacy builders against hand-made folders.

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

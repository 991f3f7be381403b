//! Batch input records: the lines of a `--input` file or of standard input,
//! as text lines or JSONL objects. Parsing lives here (not in the CLI) so it
//! can be tested and fuzzed on bytes.

/// One JSONL/text record: its 1-based line number and its JSON object (text
/// lines become `{"text": line}`).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub line: usize,
    pub value: serde_json::Value,
}

/// Parses `bytes` line by line. `name` (a file name or "stdin") goes into
/// messages; with `jsonl` every non-blank line must be a JSON object, else only
/// lines starting with `{` are read as JSON. Blank lines are left out; each bad
/// line (invalid UTF-8, invalid JSON, not an object) is an `Err` naming it, in
/// line order with the good ones, so the caller decides to skip or stop.
pub fn parse_records(bytes: &[u8], name: &str, jsonl: bool) -> Vec<Result<Record, String>> {
    let mut out = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let parsed = std::str::from_utf8(raw)
            .map_err(|e| format!("{name} line {line}: invalid UTF-8 ({e})"))
            .and_then(|s| {
                if s.trim().is_empty() {
                    Ok(None)
                } else if jsonl || s.trim_start().starts_with('{') {
                    serde_json::from_str::<serde_json::Value>(s)
                        .map_err(|e| format!("{name} line {line}: invalid JSON ({e})"))
                        .and_then(|v| {
                            if v.is_object() {
                                Ok(Some(v))
                            } else {
                                Err(format!("{name} line {line}: expected a JSON object"))
                            }
                        })
                } else {
                    Ok(Some(serde_json::json!({ "text": s })))
                }
            });
        match parsed {
            Ok(Some(value)) => out.push(Ok(Record { line, value })),
            Ok(None) => {}
            Err(msg) => out.push(Err(msg)),
        }
    }
    out
}

/// A string field of a record, or an error naming the line.
pub fn field<'a>(r: &'a Record, key: &str) -> Result<&'a str, String> {
    r.value
        .get(key)
        .and_then(|v| v.as_str())
        .ok_or_else(|| format!("line {}: no string field '{key}'", r.line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_blank_bad_and_good_in_order() {
        let got = parse_records(b"hello\n\n{\"text\": \"a\"}\r\n{bad\n\xff\n", "f", false);
        assert_eq!(got.len(), 4);
        assert_eq!(
            got[0],
            Ok(Record {
                line: 1,
                value: serde_json::json!({"text": "hello"})
            })
        );
        assert_eq!(got[1].as_ref().unwrap().line, 3);
        assert!(got[2]
            .as_ref()
            .unwrap_err()
            .starts_with("f line 4: invalid JSON"));
        assert!(got[3]
            .as_ref()
            .unwrap_err()
            .starts_with("f line 5: invalid UTF-8"));
        let jsonl = parse_records(b"plain\n[1]\n", "g", true);
        assert!(jsonl[0]
            .as_ref()
            .unwrap_err()
            .contains("g line 1: invalid JSON"));
        assert_eq!(jsonl[1], Err("g line 2: expected a JSON object".into()));
    }
}

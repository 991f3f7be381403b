//! Where a command's inputs come from: arguments, `--input FILE` (text lines
//! or JSONL), or standard input.

use std::io::Read;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnError {
    Skip,
    Stop,
}

/// One JSONL/text record: its 1-based line number and its JSON object (text
/// lines become `{"text": line}`).
pub struct Record {
    pub line: usize,
    pub value: serde_json::Value,
}

/// Reads records from a file or stdin. Bad lines (invalid UTF-8, invalid
/// JSON) are reported by line number and skipped or fatal per `on_error`.
pub fn read_records(file: Option<&Path>, on_error: OnError) -> Result<Vec<Record>, String> {
    let mut bytes = Vec::new();
    let name = match file {
        Some(p) => {
            bytes = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
            p.display().to_string()
        }
        None => {
            std::io::stdin()
                .lock()
                .read_to_end(&mut bytes)
                .map_err(|e| format!("reading stdin: {e}"))?;
            "stdin".to_string()
        }
    };
    let jsonl = file.is_some_and(|p| p.extension().is_some_and(|e| e == "jsonl" || e == "json"));
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
            Ok(Some(value)) => out.push(Record { line, value }),
            Ok(None) => {}
            Err(msg) if on_error == OnError::Skip => eprintln!("bertrt: skipping {msg}"),
            Err(msg) => return Err(msg),
        }
    }
    Ok(out)
}

/// A string field of a record, or an error naming the line.
pub fn field<'a>(r: &'a Record, key: &str) -> Result<&'a str, String> {
    r.value
        .get(key)
        .and_then(|v| v.as_str())
        .ok_or_else(|| format!("line {}: no string field '{key}'", r.line))
}

/// Inputs from arguments if any, else from `--input`/stdin records' `text`.
pub fn texts(
    args: &[String],
    file: Option<&Path>,
    on_error: OnError,
) -> Result<Vec<String>, String> {
    if !args.is_empty() {
        return Ok(args.to_vec());
    }
    if file.is_none() && std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return Err("no input: give TEXT arguments, --input FILE, or lines on stdin".into());
    }
    let mut out = Vec::new();
    for r in read_records(file, on_error)? {
        match field(&r, "text") {
            Ok(t) => out.push(t.to_string()),
            Err(m) if on_error == OnError::Skip => eprintln!("bertrt: skipping {m}"),
            Err(m) => return Err(m),
        }
    }
    Ok(out)
}

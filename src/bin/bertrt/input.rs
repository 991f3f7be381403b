//! Where a command's inputs come from: arguments, `--input FILE` (text lines
//! or JSONL), or standard input.

use std::io::Read;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnError {
    Skip,
    Stop,
}

pub use bertrt::input::{field, Record};

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
    for parsed in bertrt::input::parse_records(&bytes, &name, jsonl) {
        match parsed {
            Ok(r) => out.push(r),
            Err(msg) if on_error == OnError::Skip => eprintln!("bertrt: skipping {msg}"),
            Err(msg) => return Err(msg),
        }
    }
    Ok(out)
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

//! Stage three's output: typed results printed as JSON, JSONL, or text lines
//! (text is rendered from the typed values, never by re-reading JSON).

use crate::args::Format;
use bertrt::tasks::classify::{EntityGroup, LabelScore, TokenLabel};
use bertrt::tasks::detect::TokenScore;
use bertrt::tasks::embed;
use bertrt::tasks::fill_mask::MaskPrediction;
use bertrt::tokenize::Tokenized;
use serde::Serialize;

pub type CliResult = Result<(), String>;

/// Prints one item per input: a JSON array, JSONL lines, or `text` of each.
pub fn emit<T: Serialize>(format: Format, items: &[T], text: impl Fn(&T) -> String) -> CliResult {
    match format {
        Format::Json => line(&to_json(items, true)?)?,
        Format::Jsonl => {
            for v in items {
                line(&to_json(v, false)?)?;
            }
        }
        Format::Text => {
            for v in items {
                line(&text(v))?;
            }
        }
        Format::Npy => return Err("--format npy is only for embed".into()),
    }
    Ok(())
}

/// Writes `s` and a newline to stdout. A reader that stopped reading
/// (`bertrt ... | head`) ends the process quietly with status 0, as it
/// would for other Unix tools, instead of the panic `println!` gives.
pub fn line(s: &str) -> CliResult {
    write_out(format_args!("{s}\n"))
}

/// [`line`] without the newline.
pub fn write_out(args: std::fmt::Arguments) -> CliResult {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_fmt(args).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(format!("writing to stdout: {e}")),
    }
}

pub fn to_json<T: Serialize + ?Sized>(v: &T, pretty: bool) -> Result<String, String> {
    if pretty {
        serde_json::to_string_pretty(v)
    } else {
        serde_json::to_string(v)
    }
    .map_err(|e| e.to_string())
}

/// `info`: one `name value` line per field.
pub fn info_text(fields: &serde_json::Map<String, serde_json::Value>) -> String {
    fields
        .iter()
        .map(|(k, x)| match x.as_str() {
            Some(s) => format!("{k:<26} {s}"),
            None => format!("{k:<26} {x}"),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn tokenized_text(t: &Tokenized) -> String {
    use serde_json::json;
    [
        ("tokens", json!(t.tokens)),
        ("input_ids", json!(t.input_ids)),
        ("token_type_ids", json!(t.token_type_ids)),
        ("attention_mask", json!(t.attention_mask)),
        ("offsets", json!(t.offsets)),
    ]
    .iter()
    .map(|(k, v)| format!("{k:<15} {v}"))
    .collect::<Vec<_>>()
    .join("\n")
}

/// One mask's predictions, best first.
pub fn fill_mask_text(preds: &[MaskPrediction]) -> String {
    lines(preds, |p| {
        format!("{:.4}  {:<15} {}", p.score, p.token_str, p.sequence)
    })
}

pub fn detect_text(tokens: &[TokenScore]) -> String {
    lines(tokens, |t| format!("{:<15} {:.4}", t.token, t.probability))
}

/// One of the three shapes `classify` answers with.
#[derive(Serialize)]
#[serde(untagged)]
pub enum Classified {
    Sequence(Vec<LabelScore>),
    Tokens(Vec<TokenLabel>),
    Entities(Vec<EntityGroup>),
}

pub fn classified_text(c: &Classified) -> String {
    match c {
        Classified::Sequence(v) => lines(v, |x| format!("{:<20} {:.4}", x.label, x.score)),
        Classified::Tokens(v) => lines(v, |x| {
            format!("{:<15} {:<10} {:.4}", x.word, x.entity, x.score)
        }),
        Classified::Entities(v) => lines(v, |x| {
            format!("{:<15} {:<10} {:.4}", x.word, x.entity_group, x.score)
        }),
    }
}

fn lines<T>(items: &[T], line: impl Fn(&T) -> String) -> String {
    items.iter().map(line).collect::<Vec<_>>().join("\n")
}

/// float32 .npy, shape [n, dim] (or [n, tokens, dim] when all inputs have the same length).
pub fn write_npy(path: &std::path::Path, embs: &[embed::Embedding]) -> CliResult {
    let (shape, data): (Vec<usize>, Vec<f32>) = match embs.first() {
        None => (vec![0, 0], vec![]),
        Some(embed::Embedding::Vector(v)) => (
            vec![embs.len(), v.len()],
            embs.iter()
                .flat_map(|e| match e {
                    embed::Embedding::Vector(v) => v.clone(),
                    _ => vec![],
                })
                .collect(),
        ),
        Some(embed::Embedding::Tokens(t)) => {
            let n = t.len();
            let dim = t.first().map_or(0, |r| r.len());
            let mut data = Vec::new();
            for e in embs {
                let embed::Embedding::Tokens(t) = e else {
                    unreachable!()
                };
                if t.len() != n {
                    return Err("--pooling none with --format npy needs inputs of equal token length; use --format json".into());
                }
                data.extend(t.iter().flatten());
            }
            (vec![embs.len(), n, dim], data)
        }
    };
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}{}), }}",
        dims.join(", "),
        if shape.len() == 1 { "," } else { "" }
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.extend(data.iter().flat_map(|x| x.to_le_bytes()));
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

//! The bertrt CLI: clap parses the raw arguments, each command validates them
//! into library calls, and output goes to stdout as text, JSON or JSONL.

mod bench;
mod input;
mod serve;

use bertrt::tasks::{classify, detect, embed, fill_mask, qa};
use bertrt::tokenize::Truncation;
use bertrt::{Device, Engine};
use clap::{Args, Parser, Subcommand, ValueEnum};
use input::OnError;
use serde_json::{json, Value};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "bertrt",
    version,
    about = "Inference for BERT-family encoders (BERT, ALBERT, RoBERTa, ELECTRA)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
    Jsonl,
    /// float32 .npy (embed only, with -o)
    Npy,
}

#[derive(Args, Clone)]
struct Common {
    /// Model folder, or a hub id found in the HF cache.
    #[arg(
        long,
        short = 'm',
        default_value = "sentence-transformers/all-MiniLM-L6-v2"
    )]
    model: String,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Refuse inputs longer than the model allows instead of truncating them.
    #[arg(long)]
    no_truncate: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Model type, architecture, sizes, parameters, tokenizer, memory.
    Info {
        #[command(flatten)]
        c: Common,
    },
    /// Tokens, ids, type ids, mask and character offsets of a text (and pair).
    Tokenize {
        #[command(flatten)]
        c: Common,
        text: String,
        #[arg(long)]
        pair: Option<String>,
    },
    /// Sentence embeddings (sentence-transformers defaults when the folder has them).
    Embed {
        #[command(flatten)]
        c: Common,
        texts: Vec<String>,
        #[arg(long)]
        input: Option<PathBuf>,
        /// cls, mean, pooler or none (every token).
        #[arg(long)]
        pooling: Option<String>,
        #[arg(long)]
        normalize: bool,
        /// Output file (required for --format npy).
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "stop")]
        on_error: OnError,
    },
    /// Predict the model's mask token(s), as the HF fill-mask pipeline.
    FillMask {
        #[command(flatten)]
        c: Common,
        text: String,
        #[arg(long, default_value_t = 5)]
        top_k: usize,
    },
    /// ELECTRA discriminator: probability that each token was replaced.
    Detect {
        #[command(flatten)]
        c: Common,
        text: String,
    },
    /// Extractive question answering (SQuAD v2 semantics with --handle-impossible-answer).
    Qa {
        #[command(flatten)]
        c: Common,
        #[arg(long)]
        question: Option<String>,
        #[arg(long)]
        context: Option<String>,
        /// JSONL with {question, context} per line.
        #[arg(long)]
        input: Option<PathBuf>,
        /// Tokens per window [default: min(384, the tokenizer's model_max_length)].
        #[arg(long)]
        max_seq_len: Option<usize>,
        /// Overlap between windows [default: min(max_seq_len / 2, 128)].
        #[arg(long)]
        doc_stride: Option<usize>,
        #[arg(long, default_value_t = 64)]
        max_question_len: usize,
        #[arg(long, default_value_t = 15)]
        max_answer_len: usize,
        #[arg(long, default_value_t = 1)]
        top_k: usize,
        #[arg(long)]
        handle_impossible_answer: bool,
        #[arg(long, value_enum, default_value = "stop")]
        on_error: OnError,
    },
    /// Sequence classification (labels from id2label), or --tokens for token classification.
    Classify {
        #[command(flatten)]
        c: Common,
        text: String,
        #[arg(long)]
        pair: Option<String>,
        /// Token classification (per-token labels) instead of sequence classification.
        #[arg(long)]
        tokens: bool,
        /// With --tokens: none (every token) or simple (adjacent tokens of one
        /// entity merged), as the HF pipeline's aggregation_strategy.
        #[arg(long, value_enum, default_value = "none")]
        aggregation: Aggregation,
    },
    /// HTTP server (TEI- and OpenAI-compatible routes) with dynamic batching.
    Serve(serve::ServeArgs),
    /// Latency and throughput over a batch x seq grid (presets run random weights).
    Bench(bench::BenchArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Aggregation {
    None,
    Simple,
}

type CliResult = Result<(), String>;

fn main() {
    let cli = Cli::parse();
    if let Err(msg) = run(cli) {
        eprintln!("bertrt: error: {msg}");
        std::process::exit(1);
    }
}

fn load(c: &Common) -> Result<Engine, String> {
    // The library names the thing; the CLI adds which flag gave it.
    let device: Device = c
        .device
        .parse()
        .map_err(|e: bertrt::Error| format!("--device: {e}"))?;
    let engine = Engine::load(&c.model, device).map_err(|e| format!("--model: {e}"))?;
    for w in &engine.warnings {
        eprintln!("bertrt: warning: {w}");
    }
    Ok(engine)
}

fn truncation(c: &Common) -> Truncation {
    if c.no_truncate {
        Truncation::Error
    } else {
        Truncation::LongestFirst
    }
}

/// Prints one value per input: JSON array, JSONL lines, or `text` via `show`.
fn emit(format: Format, items: &[Value], show: impl Fn(&Value) -> String) -> CliResult {
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(items).map_err(|e| e.to_string())?
        ),
        Format::Jsonl => {
            for v in items {
                println!("{v}");
            }
        }
        Format::Text => {
            for v in items {
                println!("{}", show(v));
            }
        }
        Format::Npy => return Err("--format npy is only for embed".into()),
    }
    Ok(())
}

fn run(cli: Cli) -> CliResult {
    match cli.cmd {
        Cmd::Bench(a) => bench::run(a),
        Cmd::Serve(a) => serve::run(a),
        Cmd::Info { c } => {
            let e = load(&c)?;
            let cfg = &e.config;
            let bytes_f16 = e.parameter_count * 2;
            let v = json!({
                "folder": e.dir,
                "model_type": cfg.family.model_type(),
                "architecture": cfg.architecture,
                "hidden_size": cfg.hidden_size,
                "embedding_size": cfg.embedding_size,
                "num_hidden_layers": cfg.num_layers,
                "num_attention_heads": cfg.num_heads,
                "intermediate_size": cfg.intermediate_size,
                "hidden_act": cfg.hidden_act,
                "max_position_embeddings": cfg.max_position_embeddings,
                "vocab_size": cfg.vocab_size,
                "albert_groups": cfg.num_hidden_groups,
                "albert_sharing": cfg.sharing.name(),
                "parameters_in_memory": e.parameter_count,
                "parameters_if_unshared": e.parameter_count_unshared,
                "weights_file": e.weights_source,
                "weights_format": e.weights_format,
                "weights_shards": e.weights_files,
                "weights_dtype": e.weights_dtype,
                "tokenizer": e.tokenizer.kind.describe(),
                "backend": e.backend_name(),
                "device_weight_bytes_fp16": bytes_f16,
                "device_weight_mib_fp16": bytes_f16 >> 20,
            });
            emit(c.format, &[v], |v| {
                v.as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, x)| {
                        format!(
                            "{k:<26} {}",
                            x.as_str().map(str::to_string).unwrap_or(x.to_string())
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        Cmd::Tokenize { c, text, pair } => {
            let e = load(&c)?;
            let limit = e.config.max_tokens_per_sequence();
            let enc = e
                .tokenizer
                .encode(&text, pair.as_deref(), limit, truncation(&c))
                .map_err(|e| e.to_string())?;
            if enc.truncated_tokens > 0 {
                eprintln!(
                    "bertrt: warning: input truncated by {} tokens to {limit}",
                    enc.truncated_tokens
                );
            }
            let v = json!({
                "tokens": enc.tokens,
                "input_ids": enc.ids,
                "token_type_ids": enc.type_ids,
                "attention_mask": vec![1; enc.ids.len()],
                "offsets": enc.offsets,
            });
            emit(c.format, &[v], |v| {
                [
                    "tokens",
                    "input_ids",
                    "token_type_ids",
                    "attention_mask",
                    "offsets",
                ]
                .iter()
                .map(|k| format!("{k:<15} {}", v[k]))
                .collect::<Vec<_>>()
                .join("\n")
            })
        }
        Cmd::Embed {
            c,
            texts,
            input,
            pooling,
            normalize,
            output,
            on_error,
        } => {
            let texts = input::texts(&texts, input.as_deref(), on_error)?;
            let e = load(&c)?;
            let mut opts =
                embed::EmbedOptions::from_model_dir(&e.dir).map_err(|e| e.to_string())?;
            if let Some(p) = pooling {
                opts.pooling = p
                    .parse()
                    .map_err(|e: bertrt::Error| format!("--pooling: {e}"))?;
            }
            opts.normalize |= normalize;
            opts.truncation = truncation(&c);
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let embs = in_batches(&refs, |offset, chunk| {
                let out = embed::embed_reporting(&e, chunk, &opts).map_err(|e| e.to_string())?;
                for (i, n) in &out.truncated {
                    eprintln!(
                        "bertrt: warning: input {} truncated by {n} tokens to fit the model (use --no-truncate to refuse instead)",
                        offset + i
                    );
                }
                Ok(out.embeddings)
            })?;
            let vals: Vec<Value> = embs
                .iter()
                .map(|x| match x {
                    embed::Embedding::Vector(v) => json!(v),
                    embed::Embedding::Tokens(t) => json!(t),
                })
                .collect();
            if c.format == Format::Npy {
                let path = output.ok_or("--format npy needs -o FILE")?;
                return write_npy(&path, &embs);
            }
            match output {
                Some(path) => std::fs::write(&path, serde_json::to_string(&vals).unwrap())
                    .map_err(|e| format!("{}: {e}", path.display())),
                None => emit(c.format, &vals, |v| v.to_string()),
            }
        }
        Cmd::FillMask { c, text, top_k } => {
            let e = load(&c)?;
            let res = fill_mask::fill_mask(&e, &text, top_k).map_err(|e| e.to_string())?;
            let vals: Vec<Value> = res.iter().map(|r| json!(r)).collect();
            emit(c.format, &vals, |v| {
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|p| {
                        format!(
                            "{:.4}  {:<15} {}",
                            p["score"].as_f64().unwrap(),
                            p["token_str"].as_str().unwrap(),
                            p["sequence"].as_str().unwrap()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        Cmd::Detect { c, text } => {
            let e = load(&c)?;
            let res = detect::detect(&e, &text).map_err(|e| e.to_string())?;
            let vals: Vec<Value> = res.iter().map(|r| json!(r)).collect();
            emit(c.format, &[json!(vals)], |v| {
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|t| {
                        format!(
                            "{:<15} {:.4}",
                            t["token"].as_str().unwrap(),
                            t["probability"].as_f64().unwrap()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        Cmd::Qa {
            c,
            question,
            context,
            input,
            max_seq_len,
            doc_stride,
            max_question_len,
            max_answer_len,
            top_k,
            handle_impossible_answer,
            on_error,
        } => {
            let items: Vec<(String, String)> = match (question, context, &input) {
                (Some(q), Some(ctx), None) => vec![(q, ctx)],
                (None, None, Some(_)) | (None, None, None) => {
                    let mut v = Vec::new();
                    for r in input::read_records(input.as_deref(), on_error)? {
                        match (input::field(&r, "question"), input::field(&r, "context")) {
                            (Ok(q), Ok(ctx)) => v.push((q.to_string(), ctx.to_string())),
                            (Err(m), _) | (_, Err(m)) if on_error == OnError::Skip => eprintln!("bertrt: skipping {m}"),
                            (Err(m), _) | (_, Err(m)) => return Err(m),
                        }
                    }
                    v
                }
                _ => return Err("give --question and --context together, or --input FILE (JSONL {question, context})".into()),
            };
            let e = load(&c)?;
            let defaults = qa::QaOptions::hf_defaults(&e);
            let max_seq_len = max_seq_len.unwrap_or(defaults.max_seq_len);
            let opts = qa::QaOptions {
                top_k,
                doc_stride: doc_stride.unwrap_or((max_seq_len / 2).min(128)),
                max_answer_len,
                max_seq_len,
                max_question_len,
                handle_impossible_answer,
                ..defaults
            };
            let refs: Vec<(&str, &str)> = items
                .iter()
                .map(|(q, c)| (q.as_str(), c.as_str()))
                .collect();
            let res = in_batches(&refs, |_, chunk| {
                qa::qa_many(&e, chunk, &opts).map_err(|e| e.to_string())
            })?;
            let vals: Vec<Value> = res
                .iter()
                .map(|answers| {
                    if top_k == 1 && answers.len() == 1 {
                        json!(answers[0])
                    } else {
                        json!(answers)
                    }
                })
                .collect();
            emit(c.format, &vals, |v| v.to_string())
        }
        Cmd::Classify {
            c,
            text,
            pair,
            tokens,
            aggregation,
        } => {
            let e = load(&c)?;
            let v = if tokens && aggregation == Aggregation::Simple {
                json!(classify::classify_entities(&e, &text, &["O"]).map_err(|e| e.to_string())?)
            } else if tokens {
                json!(classify::classify_tokens(&e, &text, &["O"]).map_err(|e| e.to_string())?)
            } else {
                json!(classify::classify(&e, &text, pair.as_deref()).map_err(|e| e.to_string())?)
            };
            emit(c.format, &[v], |v| {
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| match x.get("label") {
                        Some(l) => format!(
                            "{:<20} {:.4}",
                            l.as_str().unwrap(),
                            x["score"].as_f64().unwrap()
                        ),
                        None => format!(
                            "{:<15} {:<10} {:.4}",
                            x["word"].as_str().unwrap(),
                            x.get("entity")
                                .or_else(|| x.get("entity_group"))
                                .and_then(|v| v.as_str())
                                .unwrap_or(""),
                            x["score"].as_f64().unwrap()
                        ),
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
    }
}

/// Inputs per forward pass in batch modes.
const BATCH: usize = 32;

/// Runs `f` over chunks of `items` with a progress bar on stderr (indicatif
/// draws nothing when stderr is not a terminal, keeping stdout clean).
fn in_batches<T, R>(
    items: &[T],
    f: impl Fn(usize, &[T]) -> Result<Vec<R>, String>,
) -> Result<Vec<R>, String> {
    let bar = if items.len() > BATCH {
        indicatif::ProgressBar::new(items.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, chunk) in items.chunks(BATCH).enumerate() {
        out.extend(f(i * BATCH, chunk)?);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(out)
}

/// float32 .npy, shape [n, dim] (or [n, tokens, dim] when all inputs have the same length).
fn write_npy(path: &std::path::Path, embs: &[embed::Embedding]) -> CliResult {
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

//! The bertrt CLI in three stages, as ripgrep does it: clap parses the raw
//! arguments, [`args::validate`] checks and types them into a [`Job`], and
//! [`run`] loads the model and prints typed results (`output`).

mod args;
mod bench;
mod input;
mod output;
mod serve;

use args::{ClassifyMode, Format, Inputs, Job, QaItems, Run};
use bertrt::tasks::{classify, detect, embed, fill_mask, qa};
use bertrt::Engine;
use clap::Parser;
use output::{emit, Classified, CliResult};

fn main() {
    let cli = args::Cli::parse();
    if let Err(msg) = args::validate(cli).and_then(run) {
        eprintln!("bertrt: error: {msg}");
        std::process::exit(1);
    }
}

fn load(r: &Run) -> Result<Engine, String> {
    // The library names the thing; the CLI adds which flag gave it.
    let engine = Engine::load_with(&r.model, &r.options).map_err(|e| format!("--model: {e}"))?;
    for w in &engine.warnings {
        eprintln!("bertrt: warning: {w}");
    }
    Ok(engine)
}

fn err(e: bertrt::Error) -> String {
    e.to_string()
}

/// This process's peak resident memory so far (VmHWM; None off Linux): for
/// `info` and `bench`, the cost of loading the model.
pub(crate) fn peak_rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib >> 10)
}

fn run(job: Job) -> CliResult {
    match job {
        Job::Bench(a) => bench::run(a),
        Job::Serve(a) => serve::run(a),
        Job::Info(r) => {
            let e = load(&r)?;
            let cfg = &e.config;
            let bytes_f16 = e.parameter_count * 2;
            let fields: serde_json::Map<String, serde_json::Value> = [
                ("folder", serde_json::json!(e.dir)),
                ("model_type", serde_json::json!(cfg.family.model_type())),
                ("architecture", serde_json::json!(cfg.architecture)),
                ("hidden_size", serde_json::json!(cfg.hidden_size)),
                ("embedding_size", serde_json::json!(cfg.embedding_size)),
                ("num_hidden_layers", serde_json::json!(cfg.num_layers)),
                ("num_attention_heads", serde_json::json!(cfg.num_heads)),
                (
                    "intermediate_size",
                    serde_json::json!(cfg.intermediate_size),
                ),
                ("hidden_act", serde_json::json!(cfg.hidden_act)),
                (
                    "max_position_embeddings",
                    serde_json::json!(cfg.max_position_embeddings),
                ),
                ("vocab_size", serde_json::json!(cfg.vocab_size)),
                ("albert_groups", serde_json::json!(cfg.num_hidden_groups)),
                ("albert_sharing", serde_json::json!(cfg.sharing.name())),
                ("parameters_in_memory", serde_json::json!(e.parameter_count)),
                (
                    "parameters_if_unshared",
                    serde_json::json!(e.parameter_count_unshared),
                ),
                ("weights_file", serde_json::json!(e.weight_files.source)),
                ("weights_format", serde_json::json!(e.weight_files.format)),
                ("weights_shards", serde_json::json!(e.weight_files.files)),
                ("weights_dtype", serde_json::json!(e.weight_files.dtype)),
                ("tokenizer", serde_json::json!(e.tokenizer.kind.describe())),
                ("backend", serde_json::json!(e.backend_name())),
                ("device_weight_bytes_fp16", serde_json::json!(bytes_f16)),
                ("device_weight_mib_fp16", serde_json::json!(bytes_f16 >> 20)),
                ("peak_rss_mib", serde_json::json!(peak_rss_mib())),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            emit(r.format, &[fields], output::info_text)
        }
        Job::Tokenize { run: r, text, pair } => {
            let e = load(&r)?;
            let limit = e.config.max_tokens_per_sequence();
            let enc = e
                .tokenizer
                .encode(&text, pair.as_deref(), limit, r.truncation)
                .map_err(err)?;
            if enc.truncated_tokens > 0 {
                eprintln!(
                    "bertrt: warning: input truncated by {} tokens to {limit}",
                    enc.truncated_tokens
                );
            }
            let t = bertrt::tokenize::Tokenized::from(enc);
            emit(r.format, &[t], output::tokenized_text)
        }
        Job::Embed {
            run: r,
            inputs,
            pooling,
            normalize,
            output,
        } => {
            let texts = read_texts(&inputs)?;
            let e = load(&r)?;
            let mut opts = embed::EmbedOptions::from_model_dir(&e.dir).map_err(err)?;
            if let Some(p) = pooling {
                opts.pooling = p;
            }
            opts.normalize |= normalize;
            opts.truncation = r.truncation;
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let embs = in_batches(&refs, |offset, chunk| {
                let out = embed::embed_reporting(&e, chunk, &opts).map_err(err)?;
                for (i, n) in &out.truncated {
                    eprintln!(
                        "bertrt: warning: input {} truncated by {n} tokens to fit the model (use --no-truncate to refuse instead)",
                        offset + i
                    );
                }
                Ok(out.embeddings)
            })?;
            let vals: Vec<serde_json::Value> = embs
                .iter()
                .map(|x| match x {
                    embed::Embedding::Vector(v) => serde_json::json!(v),
                    embed::Embedding::Tokens(t) => serde_json::json!(t),
                })
                .collect();
            match (r.format, output) {
                (Format::Npy, Some(path)) => output::write_npy(&path, &embs),
                (_, Some(path)) => std::fs::write(&path, output::to_json(&vals, false)?)
                    .map_err(|e| format!("{}: {e}", path.display())),
                (_, None) => emit(r.format, &vals, |v| v.to_string()),
            }
        }
        Job::FillMask {
            run: r,
            text,
            top_k,
        } => {
            let e = load(&r)?;
            let res = fill_mask::fill_mask(&e, &text, top_k).map_err(err)?;
            emit(r.format, &res, |p| output::fill_mask_text(p))
        }
        Job::Detect { run: r, text } => {
            let e = load(&r)?;
            let res = detect::detect(&e, &text).map_err(err)?;
            emit(r.format, &[res], |t| output::detect_text(t))
        }
        Job::Qa {
            run: r,
            items,
            max_seq_len,
            doc_stride,
            max_question_len,
            max_answer_len,
            top_k,
            handle_impossible_answer,
        } => {
            let items = qa_items(items)?;
            let e = load(&r)?;
            let defaults = qa::QaOptions::hf_defaults(&e);
            let max_seq_len = max_seq_len.unwrap_or(defaults.max_seq_len);
            let opts = qa::QaOptions {
                top_k,
                doc_stride: doc_stride.unwrap_or(qa::default_doc_stride(max_seq_len)),
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
            let res = in_batches(&refs, |_, chunk| qa::qa_many(&e, chunk, &opts).map_err(err))?;
            // As the HF pipeline: one answer unwrapped, several as a list.
            let vals: Vec<serde_json::Value> = res
                .iter()
                .map(|answers| match answers.as_slice() {
                    [one] if top_k == 1 => serde_json::json!(one),
                    _ => serde_json::json!(answers),
                })
                .collect();
            emit(r.format, &vals, |v| v.to_string())
        }
        Job::Classify { run: r, text, mode } => {
            let e = load(&r)?;
            let c = match mode {
                ClassifyMode::Sequence { pair } => Classified::Sequence(
                    classify::classify(&e, &text, pair.as_deref()).map_err(err)?,
                ),
                ClassifyMode::Tokens => {
                    Classified::Tokens(classify::classify_tokens(&e, &text, &["O"]).map_err(err)?)
                }
                ClassifyMode::Entities => Classified::Entities(
                    classify::classify_entities(&e, &text, &["O"]).map_err(err)?,
                ),
            };
            emit(r.format, &[c], output::classified_text)
        }
    }
}

fn read_texts(inputs: &Inputs) -> Result<Vec<String>, String> {
    input::texts(&inputs.args, inputs.file.as_deref(), inputs.on_error)
}

fn qa_items(items: QaItems) -> Result<Vec<(String, String)>, String> {
    let inputs = match items {
        QaItems::One { question, context } => return Ok(vec![(question, context)]),
        QaItems::Records(inputs) => inputs,
    };
    let mut v = Vec::new();
    for r in input::read_records(inputs.file.as_deref(), inputs.on_error)? {
        match (input::field(&r, "question"), input::field(&r, "context")) {
            (Ok(q), Ok(ctx)) => v.push((q.to_string(), ctx.to_string())),
            (Err(m), _) | (_, Err(m)) if inputs.on_error == input::OnError::Skip => {
                eprintln!("bertrt: skipping {m}")
            }
            (Err(m), _) | (_, Err(m)) => return Err(m),
        }
    }
    Ok(v)
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

//! Stage one and two of the CLI: clap parses the raw arguments ([`Cli`]), then
//! [`validate`] turns them into a [`Job`] with typed settings, so every
//! argument error is reported before a model is loaded.

use crate::bench;
use crate::input::OnError;
use bertrt::tasks::embed::Pooling;
use bertrt::tokenize::Truncation;
use bertrt::LoadOptions;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "bertrt",
    version,
    about = "Inference for BERT-family encoders (BERT, ALBERT, RoBERTa, ELECTRA)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
    Jsonl,
    /// float32 .npy (embed only, with -o)
    Npy,
}

/// Where and how the engine computes: the same three flags on every command
/// that loads a model (and on `serve` and `bench`).
#[derive(Args, Clone)]
pub struct EngineArgs {
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// f32 or bf16 on the CPU (default f32), f16 on CUDA (the default there).
    #[arg(long)]
    pub dtype: Option<String>,
    /// CPU threads for every parallel part of the forward pass (default: one per logical CPU).
    #[arg(long)]
    pub threads: Option<usize>,
    /// CUDA: launch every kernel of the encoder eagerly instead of replaying
    /// a CUDA graph per batch-shape bucket (graphs are used for batches of up
    /// to 4096 tokens).
    #[arg(long)]
    pub no_cuda_graphs: bool,
}

impl EngineArgs {
    /// The library's options, each error naming its flag.
    pub fn options(&self) -> Result<LoadOptions, String> {
        let device = self
            .device
            .parse()
            .map_err(|e: bertrt::Error| format!("--device: {e}"))?;
        let dtype = match &self.dtype {
            Some(d) => Some(
                d.parse()
                    .map_err(|e: bertrt::Error| format!("--dtype: {e}"))?,
            ),
            None => None,
        };
        let opts = LoadOptions {
            device,
            dtype,
            threads: self.threads,
            cuda_graphs: !self.no_cuda_graphs,
        };
        opts.validate().map_err(|e| match self.threads {
            Some(0) => format!("--threads: {e}"),
            _ => format!(
                "--device {} --dtype {}: {e}",
                self.device,
                self.dtype.as_deref().unwrap_or("")
            ),
        })?;
        Ok(opts)
    }
}

#[derive(Args, Clone)]
pub struct Common {
    /// Model folder, or a hub id found in the HF cache.
    #[arg(
        long,
        short = 'm',
        default_value = "sentence-transformers/all-MiniLM-L6-v2"
    )]
    pub model: String,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Refuse inputs longer than the model allows instead of truncating them.
    #[arg(long)]
    pub no_truncate: bool,
}

#[derive(Subcommand)]
pub enum Cmd {
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
    Serve(crate::serve::ServeArgs),
    /// Latency and throughput over a batch x seq grid (presets run random weights).
    Bench(bench::BenchArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Aggregation {
    None,
    Simple,
}

/// What every model command shares, validated.
pub struct Run {
    pub model: String,
    pub options: LoadOptions,
    pub format: Format,
    pub truncation: Truncation,
}

/// Where batch inputs come from: arguments, a file, or stdin.
pub struct Inputs {
    pub args: Vec<String>,
    pub file: Option<PathBuf>,
    pub on_error: OnError,
}

pub enum QaItems {
    One { question: String, context: String },
    Records(Inputs),
}

pub enum ClassifyMode {
    Sequence { pair: Option<String> },
    Tokens,
    Entities,
}

/// A command ready to run: nothing left to check but files and the model.
pub enum Job {
    Bench(bench::BenchArgs),
    Serve(crate::serve::ServeArgs),
    Info(Run),
    Tokenize {
        run: Run,
        text: String,
        pair: Option<String>,
    },
    Embed {
        run: Run,
        inputs: Inputs,
        pooling: Option<Pooling>,
        normalize: bool,
        output: Option<PathBuf>,
    },
    FillMask {
        run: Run,
        text: String,
        top_k: usize,
    },
    Detect {
        run: Run,
        text: String,
    },
    Qa {
        run: Run,
        items: QaItems,
        max_seq_len: Option<usize>,
        doc_stride: Option<usize>,
        max_question_len: usize,
        max_answer_len: usize,
        top_k: usize,
        handle_impossible_answer: bool,
    },
    Classify {
        run: Run,
        text: String,
        mode: ClassifyMode,
    },
}

fn run_settings(c: Common, embed: bool) -> Result<Run, String> {
    // The library names the thing; the CLI adds which flag gave it.
    let options = c.engine.options()?;
    if c.format == Format::Npy && !embed {
        return Err("--format npy is only for embed".into());
    }
    Ok(Run {
        model: c.model,
        options,
        format: c.format,
        truncation: if c.no_truncate {
            Truncation::Error
        } else {
            Truncation::LongestFirst
        },
    })
}

fn positive(flag: &str, n: usize) -> Result<usize, String> {
    if n == 0 {
        return Err(format!("{flag} must be at least 1"));
    }
    Ok(n)
}

/// Stage two: every argument checked and typed.
pub fn validate(cli: Cli) -> Result<Job, String> {
    Ok(match cli.cmd {
        Cmd::Bench(a) => Job::Bench(a),
        Cmd::Serve(a) => Job::Serve(a),
        Cmd::Info { c } => Job::Info(run_settings(c, false)?),
        Cmd::Tokenize { c, text, pair } => Job::Tokenize {
            run: run_settings(c, false)?,
            text,
            pair,
        },
        Cmd::Embed {
            c,
            texts,
            input,
            pooling,
            normalize,
            output,
            on_error,
        } => {
            let run = run_settings(c, true)?;
            if run.format == Format::Npy && output.is_none() {
                return Err("--format npy needs -o FILE".into());
            }
            let pooling = pooling
                .map(|p| p.parse())
                .transpose()
                .map_err(|e: bertrt::Error| format!("--pooling: {e}"))?;
            Job::Embed {
                run,
                inputs: Inputs {
                    args: texts,
                    file: input,
                    on_error,
                },
                pooling,
                normalize,
                output,
            }
        }
        Cmd::FillMask { c, text, top_k } => Job::FillMask {
            run: run_settings(c, false)?,
            text,
            top_k: positive("--top-k", top_k)?,
        },
        Cmd::Detect { c, text } => Job::Detect {
            run: run_settings(c, false)?,
            text,
        },
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
            let items = match (question, context, input) {
                (Some(question), Some(context), None) => QaItems::One { question, context },
                (None, None, file) => QaItems::Records(Inputs {
                    args: Vec::new(),
                    file,
                    on_error,
                }),
                _ => return Err("give --question and --context together, or --input FILE (JSONL {question, context})".into()),
            };
            Job::Qa {
                run: run_settings(c, false)?,
                items,
                max_seq_len,
                doc_stride,
                max_question_len,
                max_answer_len: positive("--max-answer-len", max_answer_len)?,
                top_k: positive("--top-k", top_k)?,
                handle_impossible_answer,
            }
        }
        Cmd::Classify {
            c,
            text,
            pair,
            tokens,
            aggregation,
        } => {
            let mode = match (tokens, aggregation, pair) {
                (false, Aggregation::None, pair) => ClassifyMode::Sequence { pair },
                (false, Aggregation::Simple, _) => {
                    return Err("--aggregation goes with --tokens".into())
                }
                (true, _, Some(_)) => {
                    return Err("--pair is for sequence classification, not --tokens".into())
                }
                (true, Aggregation::None, None) => ClassifyMode::Tokens,
                (true, Aggregation::Simple, None) => ClassifyMode::Entities,
            };
            Job::Classify {
                run: run_settings(c, false)?,
                text,
                mode,
            }
        }
    })
}

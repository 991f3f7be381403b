//! `bertrt bench`: latency and throughput over a (batch, seq) grid.
//!
//! ```text
//! bertrt bench --model bert-base --batch 1,8,32 --seq 128,384 [--lengths fixed|uniform|avg0.6|real FILE]
//!              [--warmup N] [--iters N] [--max-time SECS] [--device cpu|cuda[:N]|auto]
//!              [--format table|json] [-o FILE] [--nvtx] [--profile-window ITERS] [--head]
//!              [--l2-persist on|off]
//! ```
//!
//! Each cell times the bare encoder (embeddings and layers, last hidden
//! states left on the device) unless `--head` asks for the whole forward:
//! pooler and head too, every output copied back to the host.
//!
//! `--model` is a preset name (random weights; `--list-presets`), a
//! `config.json` path (random weights), or a model folder / cached hub id
//! (its own weights). `--ids FILE --hidden-out FILE` instead runs one forward
//! on given token ids and writes the last hidden states, for checking against
//! PyTorch (scripts/compare_torch.py) before any speed is reported.

use bertrt::backend::cpu::fast::Prepacked;
use bertrt::batch::{Batch, SequenceIds};
use bertrt::bench::{
    self as lib, presets, Lengths, Machine, ModelInfo, Profiling, Report, Settings, Timed, Timer,
};
use bertrt::config::ModelConfig;
use bertrt::engine::{make_backend_prepacked, prepacker, Backend};
use bertrt::model::{random_weights_with, LinearHook, ModelWeights};
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchFormat {
    Table,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Args, Clone)]
pub struct BenchArgs {
    /// Preset name (random weights), a config.json (random weights), or a model folder / hub id.
    #[arg(long, short = 'm', default_value = "bert-base")]
    model: String,
    /// Batch sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    batch: Vec<usize>,
    /// Maximum sequence lengths (special tokens included), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "128")]
    seq: Vec<usize>,
    /// fixed, uniform (in [1, seq]), avgF (mean F*seq, e.g. avg0.6) or `real FILE`.
    #[arg(long, num_args = 1..=2, value_names = ["KIND", "FILE"], default_value = "fixed")]
    lengths: Vec<String>,
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    #[arg(long, default_value_t = 10)]
    iters: usize,
    /// Stop a cell's timed loop after this many seconds (at least 3 iterations).
    #[arg(long)]
    max_time: Option<f64>,
    /// Seed of the token ids, lengths and random weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    engine: crate::args::EngineArgs,
    #[arg(long, value_enum, default_value = "table")]
    format: BenchFormat,
    /// Also write the JSON report here.
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// NVTX ranges around layers (CUDA backend only).
    #[arg(long)]
    nvtx: bool,
    /// Bracket this many timed iterations with cudaProfilerStart/Stop (CUDA backend only).
    #[arg(long, value_name = "ITERS")]
    profile_window: Option<usize>,
    /// Keep the layers an ALBERT-style model shares resident in L2 (a
    /// persisting access-policy window; CUDA only), to time on against off.
    #[arg(long, value_enum, value_name = "on|off")]
    l2_persist: Option<OnOff>,
    /// Time the forward the model's task runs (pooler and head, with what
    /// the task reads copied to the host) instead of the bare encoder.
    #[arg(long)]
    head: bool,
    /// Print the presets and exit.
    #[arg(long)]
    list_presets: bool,
    /// Print the config.json of the preset named by --model and exit.
    #[arg(long)]
    print_config: bool,
    /// Check mode: a JSON list of token-id lists; runs one forward, no timing.
    #[arg(long, requires = "hidden_out")]
    ids: Option<PathBuf>,
    /// Check mode: last hidden states, packed [tokens, H], raw little-endian f32.
    #[arg(long, requires = "ids")]
    hidden_out: Option<PathBuf>,
}

/// The model: config, weights (each encoder linear handed to `hook` as it
/// is read), and where the weights came from.
fn load_model(
    spec: &str,
    seed: u64,
    hook: LinearHook,
) -> Result<(ModelConfig, ModelWeights, String), String> {
    let s = |e: bertrt::Error| e.to_string();
    let path = Path::new(spec);
    if path.is_file() {
        let cfg = ModelConfig::from_file(path).map_err(s)?;
        let w = random_weights_with(&cfg, seed, &mut *hook).map_err(s)?;
        return Ok((
            cfg,
            w,
            format!("random (seed {seed}) for {}", path.display()),
        ));
    }
    if !path.exists() {
        if let Some(p) = presets::find(spec) {
            let cfg = p.config().map_err(s)?;
            let w = random_weights_with(&cfg, seed, &mut *hook).map_err(s)?;
            return Ok((
                cfg,
                w,
                format!("random (seed {seed}), preset config of {}", p.hub_id),
            ));
        }
    }
    let dir = bertrt::hub::resolve_model(spec).map_err(|e| {
        format!(
            "{e}\n(presets with random weights: {})",
            presets::names().join(", ")
        )
    })?;
    let (w, files) = bertrt::model::read_dir_with(&dir, hook).map_err(s)?;
    Ok((w.config.clone(), w, files.source.display().to_string()))
}

pub fn run(a: BenchArgs) -> Result<(), String> {
    if a.list_presets {
        for p in presets::PRESETS {
            let c = p.config().map_err(|e| e.to_string())?;
            crate::output::line(&format!(
                "{:<16} {:<52} {} H={} L={} heads={} I={} vocab={}",
                p.name,
                p.hub_id,
                c.architecture,
                c.hidden_size,
                c.num_layers,
                c.num_heads,
                c.intermediate_size,
                c.vocab_size
            ))?;
        }
        return Ok(());
    }
    if a.print_config {
        let p = presets::preset(&a.model).map_err(|e| e.to_string())?;
        crate::output::line(p.config_json)?;
        return Ok(());
    }
    // Validate everything before loading anything.
    let options = a.engine.options()?;
    let lengths = match a.lengths.as_slice() {
        [kind] => Lengths::parse(kind, None),
        [kind, file] if kind == "real" => Lengths::parse(kind, Some(Path::new(file))),
        _ => {
            return Err(format!(
                "--lengths {}: a FILE goes only with `real`",
                a.lengths.join(" ")
            ))
        }
    }
    .map_err(|e| format!("--lengths: {e}"))?;
    if a.batch.iter().chain(&a.seq).any(|&n| n == 0) || a.batch.is_empty() || a.seq.is_empty() {
        return Err(
            "--batch and --seq take positive integers, e.g. --batch 1,8,32 --seq 128,384".into(),
        );
    }
    if a.iters == 0 {
        return Err("--iters must be at least 1".into());
    }

    let mut pre = prepacker(&options);
    let (cfg, weights, source) = load_model(&a.model, a.seed, &mut Prepacked::hook(&mut pre))?;
    let parameters = weights.parameter_count();
    let mut warnings = Vec::new();
    let backend =
        make_backend_prepacked(weights, pre, &options, &mut warnings).map_err(|e| e.to_string())?;
    let load_peak_rss_mib = crate::peak_rss_mib();
    let on_cpu = backend.describe().starts_with("cpu");
    for w in &warnings {
        eprintln!("bertrt: warning: {w}");
    }

    if let (Some(ids), Some(out)) = (&a.ids, &a.hidden_out) {
        return check(backend.as_ref(), &cfg, ids, out);
    }

    let profiling = Profiling {
        nvtx: a.nvtx,
        window: a.profile_window,
    };
    if (a.nvtx || a.profile_window.is_some()) && on_cpu {
        let msg = "--nvtx / --profile-window have no effect on the CPU backend (they are CUDA profiling hooks)";
        eprintln!("bertrt: note: {msg}");
        warnings.push(msg.to_string());
    } else if a.nvtx {
        backend.set_nvtx(true).map_err(|e| format!("--nvtx: {e}"))?;
    }

    let l2_persist = match a.l2_persist {
        None => None,
        Some(_) if on_cpu => {
            let msg = "--l2-persist has no effect on the CPU backend (it is a CUDA cache setting)";
            eprintln!("bertrt: note: {msg}");
            warnings.push(msg.to_string());
            None
        }
        Some(v) => Some(
            backend
                .set_l2_persist(v == OnOff::On)
                .map_err(|e| format!("--l2-persist: {e}"))?,
        ),
    };

    let settings = Settings {
        lengths,
        warmup: a.warmup,
        iters: a.iters,
        max_time: a.max_time.map(Duration::from_secs_f64),
        seed: a.seed,
        profiling,
        timed: if a.head {
            Timed::ForwardWithHeads
        } else {
            Timed::Encoder
        },
    };
    let mut report = Report {
        bertrt: lib::BuildInfo::detect(),
        machine: Machine::detect(!on_cpu),
        model: ModelInfo::new(&a.model, source, &cfg, parameters),
        backend: backend.describe(),
        dtype: match backend.dtype() {
            bertrt::Dtype::F32 => "f32",
            bertrt::Dtype::Bf16 => "bf16",
            bertrt::Dtype::F16 => "fp16",
        },
        timer: if on_cpu {
            Timer::WallClock
        } else {
            Timer::CudaEvents
        },
        timed: settings.timed,
        cuda_graphs: !on_cpu && options.cuda_graphs,
        lengths: settings.lengths.describe(),
        warmup: a.warmup,
        iters: a.iters,
        seed: a.seed,
        profiling,
        load_peak_rss_mib,
        l2_persist,
        cells: Vec::new(),
        skipped: Vec::new(),
        warnings,
    };
    let max_len = cfg.max_tokens_per_sequence();
    for &seq in &a.seq {
        for &batch in &a.batch {
            if seq > max_len {
                report.skipped.push(format!(
                    "b{batch} s{seq}: the model allows at most {max_len} tokens"
                ));
                continue;
            }
            let cell = lib::run_cell(backend.as_ref(), &cfg, batch, seq, &settings)
                .map_err(|e| e.to_string())?;
            if a.format == BenchFormat::Table {
                eprintln!(
                    "b{batch} s{seq}: {:.2} ms mean, {:.1} seq/s",
                    cell.latency_ms.mean, cell.sequences_per_s
                );
            }
            report.cells.push(cell);
        }
    }
    let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    if let Some(path) = &a.output {
        std::fs::write(path, &json).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    match a.format {
        BenchFormat::Json => crate::output::line(&json)?,
        BenchFormat::Table => crate::output::write_out(format_args!("{}", report.table()))?,
    }
    Ok(())
}

/// One forward on the given ids; the packed last hidden states to `out`.
fn check(backend: &dyn Backend, cfg: &ModelConfig, ids: &Path, out: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(ids).map_err(|e| format!("{}: {e}", ids.display()))?;
    let lists: Vec<Vec<u32>> = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{}: expected a JSON list of token-id lists: {e}",
            ids.display()
        )
    })?;
    let seqs: Vec<SequenceIds> = lists
        .into_iter()
        .map(|input_ids| SequenceIds {
            input_ids,
            token_type_ids: Vec::new(),
        })
        .collect();
    let batch = Batch::pack(&seqs, cfg).map_err(|e| e.to_string())?;
    let o = backend.forward(&batch).map_err(|e| e.to_string())?;
    let bytes: Vec<u8> = o.hidden.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(out, bytes).map_err(|e| format!("{}: {e}", out.display()))?;
    eprintln!(
        "bertrt: {} sequences, {} tokens, hidden [{}, {}] -> {} ({})",
        batch.num_seqs(),
        batch.num_tokens(),
        batch.num_tokens(),
        cfg.hidden_size,
        out.display(),
        backend.describe()
    );
    Ok(())
}

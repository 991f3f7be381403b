//! Benchmarks: a grid of (batch, seq) cells, each a packed batch of random
//! token ids run `warmup` times untimed and `iters` times timed through a
//! [`Backend`], reported as latency percentiles and throughput, with the
//! machine and build it ran on (`bertrt bench`, scripts/compare_torch.py).
//!
//! Sequence lengths per cell follow one of [`Lengths`]; lengths count
//! special tokens, so `seq` is the padded length a padded engine would run.
//!
//! What is timed ([`Timed`]): by default the bare encoder
//! (`Backend::encode_timed`: embeddings and layers, the last hidden states left
//! on the device), as PyTorch's `base_model` is timed in
//! scripts/compare_torch.py; with `heads`, the whole `Backend::forward_timed`,
//! pooler and head included, its outputs copied back to the host (on BERT's
//! MLM head that copy is [tokens, vocab] logits). How: CUDA events around the
//! call on a GPU, the wall clock on the CPU (see [`Timer`]).

pub mod presets;

use crate::batch::{Batch, SequenceIds};
use crate::config::ModelConfig;
use crate::engine::Backend;
use crate::error::{Error, Result};
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant};

/// How the sequence lengths of a cell are drawn (max length `seq`).
#[derive(Debug, Clone, PartialEq)]
pub enum Lengths {
    /// Every sequence is `seq` long.
    Fixed,
    /// Uniform in [1, seq] (FasterTransformer's variable-length benchmarks).
    Uniform,
    /// Average `fraction * seq` (ByteTransformer reports 0.6): uniform in
    /// [(2f-1) seq, seq] for f >= 0.5, else uniform in [1, 2f seq].
    Average(f64),
    /// Lengths read from a file (one integer per line), drawn at random and
    /// truncated to `seq` as a tokenizer would.
    Real { path: String, lengths: Vec<usize> },
}

impl Lengths {
    /// `fixed`, `uniform`, `avg0.6` (any fraction in (0, 1]), or `real` with `file`.
    pub fn parse(spec: &str, file: Option<&Path>) -> Result<Lengths> {
        let bad = |m: String| Error::Input(format!("--lengths {spec}: {m}"));
        match spec {
            "fixed" => Ok(Lengths::Fixed),
            "uniform" => Ok(Lengths::Uniform),
            "real" => {
                let path = file.ok_or_else(|| bad("needs a FILE (one length per line)".into()))?;
                Self::read_real(path)
            }
            _ => {
                if let Some(f) = spec.strip_prefix("avg") {
                    let f: f64 = f
                        .parse()
                        .map_err(|_| bad("use avgF with F in (0, 1], e.g. avg0.6".into()))?;
                    if !(f > 0.0 && f <= 1.0) {
                        return Err(bad("the average fraction must be in (0, 1]".into()));
                    }
                    Ok(Lengths::Average(f))
                } else {
                    Err(bad(
                        "use fixed, uniform, avgF (e.g. avg0.6) or real FILE".into()
                    ))
                }
            }
        }
    }

    fn read_real(path: &Path) -> Result<Lengths> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut lengths = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let n: usize = l.parse().map_err(|_| {
                Error::Input(format!(
                    "{}:{}: '{l}' is not a length (one positive integer per line)",
                    path.display(),
                    i + 1
                ))
            })?;
            if n == 0 {
                return Err(Error::Input(format!(
                    "{}:{}: length 0",
                    path.display(),
                    i + 1
                )));
            }
            lengths.push(n);
        }
        if lengths.is_empty() {
            return Err(Error::Input(format!("{}: no lengths", path.display())));
        }
        Ok(Lengths::Real {
            path: path.display().to_string(),
            lengths,
        })
    }

    pub fn describe(&self) -> String {
        match self {
            Lengths::Fixed => "fixed".into(),
            Lengths::Uniform => "uniform [1, seq]".into(),
            Lengths::Average(f) => format!("avg{f} (mean {f} * seq)"),
            Lengths::Real { path, lengths } => format!("real {path} ({} lengths)", lengths.len()),
        }
    }

    /// `batch` lengths in [1, seq].
    pub fn draw(&self, batch: usize, seq: usize, rng: &mut Rng) -> Vec<usize> {
        let uniform = |rng: &mut Rng, lo: usize, hi: usize| lo + rng.below(hi - lo + 1);
        (0..batch)
            .map(|_| match self {
                Lengths::Fixed => seq,
                Lengths::Uniform => uniform(rng, 1, seq),
                Lengths::Average(f) => {
                    if *f >= 0.5 {
                        let lo = ((2.0 * f - 1.0) * seq as f64).round() as usize;
                        uniform(rng, lo.clamp(1, seq), seq)
                    } else {
                        let hi = (2.0 * f * seq as f64).round() as usize;
                        uniform(rng, 1, hi.clamp(1, seq))
                    }
                }
                Lengths::Real { lengths, .. } => lengths[rng.below(lengths.len())].min(seq),
            })
            .collect()
    }
}

pub use crate::rng::Rng;

/// Random token ids (never the pad id, so RoBERTa positions are plain) for
/// the given lengths, packed.
pub fn random_batch(cfg: &ModelConfig, lengths: &[usize], rng: &mut Rng) -> Result<Batch> {
    let v = cfg.vocab_size;
    let pad = cfg.pad_token_id as usize;
    let seqs: Vec<SequenceIds> = lengths
        .iter()
        .map(|&n| SequenceIds {
            input_ids: (0..n)
                .map(|_| {
                    let id = rng.below(v);
                    (if id == pad { (id + 1) % v } else { id }) as u32
                })
                .collect(),
            token_type_ids: Vec::new(),
        })
        .collect();
    Batch::pack(&seqs, cfg)
}

/// Profiling switches for the CUDA backend (no effect on the CPU): `nvtx`
/// pushes an NVTX range per layer and op; `window = Some(n)` brackets the
/// first n timed iterations of each cell with cudaProfilerStart/Stop, for
/// `nsys --capture-range=cudaProfilerApi` and `ncu --profile-from-start off`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Profiling {
    pub nvtx: bool,
    pub window: Option<usize>,
}

/// How a cell's calls are timed: the host's monotonic clock, or CUDA events
/// recorded around each call on the GPU (device time; it includes the copy of
/// the outputs back to the host only under [`Timed::ForwardWithHeads`]); the
/// wall clock is reported beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Timer {
    WallClock,
    CudaEvents,
}

/// What a cell's timed window holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Timed {
    /// Embeddings and layers; the last hidden states stay on the device.
    Encoder,
    /// Encoder, pooler and head, every output copied back to the host.
    ForwardWithHeads,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub lengths: Lengths,
    pub warmup: usize,
    pub iters: usize,
    /// Stop a cell's timed loop after this long (at least 3 iterations run).
    pub max_time: Option<Duration>,
    pub seed: u64,
    pub profiling: Profiling,
    pub timed: Timed,
}

/// Latency statistics in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub min: f64,
    pub max: f64,
}

impl Latency {
    /// Nearest-rank percentiles of `ms` (not empty).
    pub fn of(ms: &[f64]) -> Latency {
        let mut s = ms.to_vec();
        s.sort_by(|a, b| a.total_cmp(b));
        let pct = |p: f64| s[((p / 100.0 * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
        Latency {
            mean: s.iter().sum::<f64>() / s.len() as f64,
            p50: pct(50.0),
            p90: pct(90.0),
            p99: pct(99.0),
            min: s[0],
            max: s[s.len() - 1],
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub batch: usize,
    pub seq: usize,
    /// Real (unpadded) tokens in the batch, and the padded count batch*seq.
    pub tokens: usize,
    pub padded_tokens: usize,
    pub mean_len: f64,
    pub iters: usize,
    /// Device time by CUDA events on a GPU, else the wall clock.
    pub latency_ms: Latency,
    /// Host wall time of the same iterations (GPU runs only).
    pub wall_latency_ms: Option<Latency>,
    /// From the mean latency.
    pub sequences_per_s: f64,
    pub tokens_per_s: f64,
    /// Encoder GEMM + attention FLOPs per forward (heads excluded), and the
    /// rate they imply: the number to hold against the card's peak.
    pub encoder_gflop: f64,
    pub encoder_gflop_per_s: f64,
    /// The sequence lengths drawn for this cell (so another engine can run
    /// exactly the same batch).
    pub lengths: Vec<usize>,
}

/// Encoder FLOPs (multiply-add = 2) for sequences of these lengths: QKV, out,
/// FFN up/down GEMMs per token and QK^T + PV per sequence, every executed layer;
/// plus the E -> H projection.
pub fn encoder_flops(cfg: &ModelConfig, lengths: &[usize]) -> f64 {
    let (h, i, e) = (
        cfg.hidden_size as f64,
        cfg.intermediate_size as f64,
        cfg.embedding_size as f64,
    );
    let layers = (cfg.num_layers * cfg.inner_group_num) as f64;
    let tokens: f64 = lengths.iter().map(|&n| n as f64).sum();
    let sq: f64 = lengths.iter().map(|&n| (n * n) as f64).sum();
    let per_layer = tokens * 2.0 * (4.0 * h * h + 2.0 * h * i) + sq * 4.0 * h;
    let project = if cfg.embedding_size != cfg.hidden_size {
        tokens * 2.0 * e * h
    } else {
        0.0
    };
    layers * per_layer + project
}

/// Runs one (batch, seq) cell. `seq` must fit the model (checked by `Batch::pack`).
pub fn run_cell(
    backend: &dyn Backend,
    cfg: &ModelConfig,
    batch: usize,
    seq: usize,
    s: &Settings,
) -> Result<Cell> {
    // One stream per cell, so a cell's inputs do not depend on the grid.
    let mut rng = Rng::new(s.seed ^ ((batch as u64) << 32) ^ seq as u64);
    let lengths = s.lengths.draw(batch, seq, &mut rng);
    let b = random_batch(cfg, &lengths, &mut rng)?;
    for _ in 0..s.warmup {
        match s.timed {
            Timed::Encoder => backend.encode_timed(&b).map(drop)?,
            Timed::ForwardWithHeads => backend.forward(&b).map(drop)?,
        }
    }
    let mut ms = Vec::with_capacity(s.iters);
    let mut wall = Vec::with_capacity(s.iters);
    let start = Instant::now();
    for i in 0..s.iters.max(1) {
        if s.profiling.window.is_some_and(|n| n > 0) && i == 0 {
            backend.profiler(true)?;
        }
        let t = Instant::now();
        let device_ms = match s.timed {
            Timed::Encoder => backend.encode_timed(&b)?,
            Timed::ForwardWithHeads => backend.forward_timed(&b)?.1,
        };
        let w = t.elapsed().as_secs_f64() * 1e3;
        wall.push(w);
        ms.push(device_ms.unwrap_or(w));
        if s.profiling.window == Some(i + 1) {
            backend.profiler(false)?;
        }
        if let Some(limit) = s.max_time {
            if ms.len() >= 3 && start.elapsed() >= limit {
                break;
            }
        }
    }
    if s.profiling.window.is_some_and(|n| n > ms.len()) {
        backend.profiler(false)?;
    }
    let lat = Latency::of(&ms);
    let wall_latency_ms = (wall != ms).then(|| Latency::of(&wall));
    let tokens = b.num_tokens();
    let flops = encoder_flops(cfg, &lengths);
    Ok(Cell {
        batch,
        seq,
        tokens,
        padded_tokens: batch * seq,
        mean_len: tokens as f64 / batch as f64,
        iters: ms.len(),
        sequences_per_s: batch as f64 / (lat.mean / 1e3),
        tokens_per_s: tokens as f64 / (lat.mean / 1e3),
        encoder_gflop: flops / 1e9,
        encoder_gflop_per_s: flops / 1e9 / (lat.mean / 1e3),
        latency_ms: lat,
        wall_latency_ms,
        lengths,
    })
}

/// The machine the numbers came from. GPU fields are null without a GPU.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu_model: Option<String>,
    pub cpu_logical_cores: usize,
    pub threads: usize,
    pub gpu_name: Option<String>,
    pub gpu_driver: Option<String>,
    pub gpu_memory_mib: Option<u64>,
    pub os: String,
}

impl Machine {
    /// `with_gpu`: ask nvidia-smi (best effort) for the GPU fields.
    pub fn detect(with_gpu: bool) -> Machine {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        });
        let (mut gpu_name, mut gpu_driver, mut gpu_memory_mib) = (None, None, None);
        if with_gpu {
            if let Some(line) = command_output(
                "nvidia-smi",
                &[
                    "--query-gpu=name,driver_version,memory.total",
                    "--format=csv,noheader,nounits",
                    "-i",
                    "0",
                ],
            ) {
                let f: Vec<&str> = line.split(',').map(str::trim).collect();
                if f.len() == 3 {
                    gpu_name = Some(f[0].to_string());
                    gpu_driver = Some(f[1].to_string());
                    gpu_memory_mib = f[2].parse().ok();
                }
            }
        }
        Machine {
            cpu_model,
            cpu_logical_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            threads: rayon::current_num_threads(),
            gpu_name,
            gpu_driver,
            gpu_memory_mib,
            os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
        }
    }
}

/// The build: crate version and git commit (best effort).
#[derive(Debug, Clone, Serialize)]
pub struct BuildInfo {
    pub version: &'static str,
    pub git_commit: Option<String>,
    pub git_dirty: Option<bool>,
    pub profile: &'static str,
}

impl BuildInfo {
    /// The commit from `$BERTRT_GIT_COMMIT` (set by scripts/gpu-check where
    /// there is no repository), else `git` in the working directory, else in
    /// the source tree the binary was built from.
    pub fn detect() -> BuildInfo {
        let from_env = std::env::var("BERTRT_GIT_COMMIT")
            .ok()
            .filter(|s| !s.is_empty());
        let (git_commit, git_dirty) = match from_env {
            Some(c) => {
                let dirty = c.ends_with("-dirty");
                (Some(c.trim_end_matches("-dirty").to_string()), Some(dirty))
            }
            None => {
                let git = |dir: &str, args: &[&str]| {
                    let mut a = vec!["-C", dir];
                    a.extend_from_slice(args);
                    command_output("git", &a)
                };
                let dirs = [".", env!("CARGO_MANIFEST_DIR")];
                dirs.iter()
                    .find_map(|d| git(d, &["rev-parse", "HEAD"]).map(|c| (*d, c)))
                    .map(|(d, c)| {
                        let dirty = git(d, &["status", "--porcelain", "--untracked-files=no"])
                            .map(|s| !s.is_empty());
                        (Some(c), dirty)
                    })
                    .unwrap_or((None, None))
            }
        };
        BuildInfo {
            version: env!("CARGO_PKG_VERSION"),
            git_commit,
            git_dirty,
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
        }
    }
}

/// First line of a command's stdout, if it ran and succeeded.
fn command_output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(cmd)
        .args(args)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8_lossy(&out.stdout);
    Some(s.lines().next().unwrap_or("").trim().to_string())
}

/// A whole `bertrt bench` run: what ran, where, and every figure.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub bertrt: BuildInfo,
    pub machine: Machine,
    pub model: ModelInfo,
    pub backend: String,
    pub dtype: &'static str,
    pub timer: Timer,
    pub timed: Timed,
    pub lengths: String,
    pub warmup: usize,
    pub iters: usize,
    pub seed: u64,
    pub profiling: Profiling,
    pub cells: Vec<Cell>,
    /// Cells not run, with the reason (e.g. seq beyond the model's positions).
    pub skipped: Vec<String>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    /// What `--model` said.
    pub name: String,
    /// "preset (random weights)", "config (random weights)" or the weights file.
    pub weights: String,
    pub family: String,
    pub architecture: String,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub intermediate_size: usize,
    pub vocab_size: usize,
    pub parameters: usize,
}

impl ModelInfo {
    pub fn new(name: &str, weights: String, cfg: &ModelConfig, parameters: usize) -> ModelInfo {
        ModelInfo {
            name: name.to_string(),
            weights,
            family: format!("{:?}", cfg.family).to_lowercase(),
            architecture: cfg.architecture.clone(),
            hidden_size: cfg.hidden_size,
            num_layers: cfg.num_layers * cfg.inner_group_num,
            num_heads: cfg.num_heads,
            intermediate_size: cfg.intermediate_size,
            vocab_size: cfg.vocab_size,
            parameters,
        }
    }
}

impl Report {
    /// A fixed-width table of the cells.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{} | {} | {} | timed: {} | lengths {} | warmup {} | iters {}\n",
            self.model.name,
            self.backend,
            self.dtype,
            match self.timed {
                Timed::Encoder => "bare encoder",
                Timed::ForwardWithHeads => "forward with heads, outputs to host",
            },
            self.lengths,
            self.warmup,
            self.iters
        );
        s += &format!(
            "{:>5} {:>5} {:>7} {:>9} {:>9} {:>9} {:>9} {:>10} {:>11} {:>9}\n",
            "batch",
            "seq",
            "tokens",
            "mean ms",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "seq/s",
            "tokens/s",
            "GFLOP/s"
        );
        for c in &self.cells {
            let l = &c.latency_ms;
            s += &format!(
                "{:>5} {:>5} {:>7} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>10.1} {:>11.0} {:>9.1}\n",
                c.batch,
                c.seq,
                c.tokens,
                l.mean,
                l.p50,
                l.p90,
                l.p99,
                c.sequences_per_s,
                c.tokens_per_s,
                c.encoder_gflop_per_s
            );
        }
        for k in &self.skipped {
            s += &format!("skipped: {k}\n");
        }
        s
    }
}

#[cfg(test)]
mod tests;

//! The report of a run: machine, build, model and every cell.

use super::*;

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

/// The build: crate version and git commit.
#[derive(Debug, Clone, Serialize)]
pub struct BuildInfo {
    pub version: &'static str,
    pub git_commit: Option<String>,
    pub git_dirty: Option<bool>,
    pub profile: &'static str,
}

impl BuildInfo {
    /// The commit from `$BERTRT_GIT_COMMIT` at run time (scripts/gpu-check
    /// sets it, with "-dirty" for a modified tree), else the one build.rs
    /// embedded; never `git` in whatever directory the binary runs from.
    pub fn detect() -> BuildInfo {
        let from_env = std::env::var("BERTRT_GIT_COMMIT")
            .ok()
            .filter(|s| !s.is_empty());
        let (git_commit, git_dirty) = match from_env {
            Some(c) => {
                let dirty = c.ends_with("-dirty");
                (Some(c.trim_end_matches("-dirty").to_string()), Some(dirty))
            }
            None => match env!("BERTRT_GIT_COMMIT") {
                "unknown" => (None, None),
                c => (Some(c.to_string()), None),
            },
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
    /// Small batches' encoder replayed as CUDA graphs (`--no-cuda-graphs` off).
    pub cuda_graphs: bool,
    pub lengths: String,
    pub warmup: usize,
    pub iters: usize,
    pub seed: u64,
    pub profiling: Profiling,
    /// The process's peak resident memory once the model was loaded (VmHWM,
    /// MiB; None off Linux): the cost of loading, before any forward.
    pub load_peak_rss_mib: Option<u64>,
    /// What `--l2-persist` did (None: not asked).
    pub l2_persist: Option<String>,
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
            "{} | {} | {}{} | timed: {} | lengths {} | warmup {} | iters {}\n",
            self.model.name,
            self.backend,
            self.dtype,
            if self.cuda_graphs {
                ", cuda graphs"
            } else {
                ""
            },
            match self.timed {
                Timed::Encoder => "bare encoder",
                Timed::ForwardWithHeads => "forward with heads, what the task reads to host",
            },
            self.lengths,
            self.warmup,
            self.iters
        );
        if let Some(m) = self.load_peak_rss_mib {
            s += &format!("peak RSS after loading: {m} MiB\n");
        }
        if let Some(l2) = &self.l2_persist {
            s += &format!("{l2}\n");
        }
        s += &format!(
            "{:>5} {:>5} {:>7} {:>9} {:>9} {:>9} {:>9} {:>10} {:>11} {:>9} {:>9} {:>9}\n",
            "batch",
            "seq",
            "tokens",
            "mean ms",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "seq/s",
            "tokens/s",
            "GFLOP/s",
            "KiB up/it",
            "down/it"
        );
        let kib = |b: Option<f64>| b.map_or("-".to_string(), |b| format!("{:.1}", b / 1024.0));
        for c in &self.cells {
            let l = &c.latency_ms;
            s += &format!(
                "{:>5} {:>5} {:>7} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>10.1} {:>11.0} {:>9.1} {:>9} {:>9}\n",
                c.batch,
                c.seq,
                c.tokens,
                l.mean,
                l.p50,
                l.p90,
                l.p99,
                c.sequences_per_s,
                c.tokens_per_s,
                c.encoder_gflop_per_s,
                kib(c.bytes_to_device_per_iter),
                kib(c.bytes_from_device_per_iter)
            );
        }
        for k in &self.skipped {
            s += &format!("skipped: {k}\n");
        }
        s
    }
}

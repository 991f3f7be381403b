//! One (batch, seq) cell: warm-up, timed iterations, latency and throughput.

use super::*;

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
/// what the task reads back only under [`Timed::ForwardWithHeads`]); the
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
    /// The forward a task runs on this model ([`task_want`]): encoder,
    /// pooler and head, with only what the task reads copied back.
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
    /// Bytes copied to and from the device per timed iteration, and host
    /// waits per iteration (None without a device).
    pub bytes_to_device_per_iter: Option<f64>,
    pub bytes_from_device_per_iter: Option<f64>,
    pub syncs_per_iter: Option<f64>,
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

/// What the task for this model's head asks of a forward, for
/// [`Timed::ForwardWithHeads`]: fill-mask on an MLM head, one mask per
/// sequence (its middle token; the pipeline's usual input); the head's
/// output for QA, classification and detection; a bare encoder's
/// mean-pooled, normalized embeddings (sentence-transformers' default).
pub fn task_want(cfg: &ModelConfig, cu_seqlens: &[usize]) -> Want {
    match cfg.head {
        Head::MaskedLm | Head::AlbertPreTraining => Want::TokenLogitsAt(
            cu_seqlens
                .windows(2)
                .filter(|w| w[1] > w[0])
                .map(|w| (w[0] + w[1]) / 2)
                .collect(),
        ),
        Head::Base => Want::Embeddings {
            pooling: Pooling::Mean,
            normalize: true,
        },
        _ => Want::Head,
    }
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
    let want = task_want(cfg, b.cu_seqlens());
    for _ in 0..s.warmup {
        match s.timed {
            Timed::Encoder => backend.encode_timed(&b).map(drop)?,
            Timed::ForwardWithHeads => backend.forward_want(&b, &want).map(drop)?,
        }
    }
    let mut ms = Vec::with_capacity(s.iters);
    let mut wall = Vec::with_capacity(s.iters);
    let traffic_before = backend.device_traffic();
    let start = Instant::now();
    for i in 0..s.iters.max(1) {
        if s.profiling.window.is_some_and(|n| n > 0) && i == 0 {
            backend.profiler(true)?;
        }
        let t = Instant::now();
        let device_ms = match s.timed {
            Timed::Encoder => backend.encode_timed(&b)?,
            Timed::ForwardWithHeads => backend.forward_want_timed(&b, &want)?.1,
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
    let traffic = traffic_before
        .zip(backend.device_traffic())
        .map(|(before, after)| after.since(&before));
    if s.profiling.window.is_some_and(|n| n > ms.len()) {
        backend.profiler(false)?;
    }
    let per_iter = |v: u64| v as f64 / ms.len() as f64;
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
        bytes_to_device_per_iter: traffic.map(|t| per_iter(t.upload_bytes)),
        bytes_from_device_per_iter: traffic.map(|t| per_iter(t.download_bytes)),
        syncs_per_iter: traffic.map(|t| per_iter(t.syncs)),
    })
}

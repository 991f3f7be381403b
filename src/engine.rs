//! [`Engine`]: a loaded model folder (config, tokenizer, weights on a backend),
//! the object the tasks and the CLI work through. Send + Sync: one engine
//! serves many threads.

use crate::backend::cpu::fast::Prepacked;
use crate::backend::cpu::CpuEngine;
use crate::batch::{Batch, SequenceIds};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::model::{read_dir_with, ModelWeights, WeightFiles};
use crate::options::{Dtype, LoadOptions};
use crate::output::{ForwardOutput, Want, Wanted};
use crate::tokenize::{Encoded, Tokenizer, Truncation};
use std::path::{Path, PathBuf};

/// Where to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda(usize),
    /// CUDA when present, else CPU (and say so).
    Auto,
}

impl std::str::FromStr for Device {
    type Err = Error;
    fn from_str(s: &str) -> Result<Device> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "auto" => Ok(Device::Auto),
            "cuda" => Ok(Device::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| {
                    Error::Input(format!("device '{s}': use auto, cpu, cuda or cuda:N"))
                }),
        }
    }
}

/// A forward-pass implementation over packed batches.
pub trait Backend: Send + Sync {
    fn forward(&self, batch: &Batch) -> Result<ForwardOutput>;
    /// Only what `want` asks for. This default runs the whole forward and
    /// reduces on the host; a device backend computes and copies back only
    /// the part asked for.
    fn forward_want(&self, batch: &Batch, want: &Want) -> Result<Wanted> {
        crate::output::reduce(self.forward(batch)?, batch, want)
    }
    /// e.g. "cpu (f32)" or "cuda:0 NVIDIA H100 (fp16)".
    fn describe(&self) -> String;
    /// The format the forward pass really computes in (after any fallback).
    fn dtype(&self) -> Dtype {
        Dtype::F16
    }

    /// NVTX ranges per layer and op, for Nsight Systems (CUDA only).
    fn set_nvtx(&self, _on: bool) -> Result<()> {
        Err(Error::Device("NVTX ranges need the CUDA backend".into()))
    }
    /// cudaProfilerStart (`true`) / Stop (`false`), bracketing what
    /// `nsys --capture-range=cudaProfilerApi` or `ncu --profile-from-start off`
    /// record (CUDA only).
    fn profiler(&self, _on: bool) -> Result<()> {
        Err(Error::Device(
            "the CUDA profiler API needs the CUDA backend".into(),
        ))
    }
    /// A persisting-L2 window over the layers the model shares (ALBERT), on
    /// or off, for `bertrt bench --l2-persist`; what was done, in words
    /// (CUDA only).
    fn set_l2_persist(&self, _on: bool) -> Result<String> {
        Err(Error::Device(
            "L2 persistence needs the CUDA backend".into(),
        ))
    }
    /// [`Backend::forward_want`] plus its device time in ms from events,
    /// where the backend has them (None on the CPU).
    fn forward_want_timed(&self, batch: &Batch, want: &Want) -> Result<(Wanted, Option<f64>)> {
        Ok((self.forward_want(batch, want)?, None))
    }
    /// The bare encoder (embeddings and layers; no pooler, no head), its last
    /// hidden states left where the backend computed them (on a GPU: not
    /// copied back), plus its device time in ms where the backend has events.
    /// What `bertrt bench` times unless asked for the heads.
    fn encode_timed(&self, batch: &Batch) -> Result<Option<f64>>;
    /// Copies to and from the device and host waits so far (None without a device).
    fn device_traffic(&self) -> Option<crate::backend::fp16::Traffic> {
        None
    }
}

impl Backend for CpuEngine {
    fn forward(&self, batch: &Batch) -> Result<ForwardOutput> {
        CpuEngine::forward(self, batch)
    }
    fn describe(&self) -> String {
        CpuEngine::describe(self)
    }
    fn dtype(&self) -> Dtype {
        CpuEngine::dtype(self)
    }
    fn encode_timed(&self, batch: &Batch) -> Result<Option<f64>> {
        std::hint::black_box(CpuEngine::encode(self, batch));
        Ok(None)
    }
}

pub struct Engine {
    pub dir: PathBuf,
    pub config: ModelConfig,
    pub tokenizer: Tokenizer,
    backend: Box<dyn Backend>,
    /// Things the user should hear about (unused tensors, device fallback).
    pub warnings: Vec<String>,
    /// Weight facts for `info`.
    pub parameter_count: usize,
    pub parameter_count_unshared: usize,
    pub weight_files: WeightFiles,
}

impl Engine {
    /// Loads a model folder (or cached hub id) onto `device`, in the
    /// device's default dtype.
    pub fn load(model: &str, device: Device) -> Result<Engine> {
        Self::load_with(model, &LoadOptions::on(device))
    }

    /// Loads a model folder (or cached hub id) with a dtype and thread count.
    pub fn load_with(model: &str, opts: &LoadOptions) -> Result<Engine> {
        opts.validate()?;
        let dir = crate::hub::resolve_model(model)?;
        Self::load_dir_with(&dir, opts)
    }

    pub fn load_dir(dir: &Path, device: Device) -> Result<Engine> {
        Self::load_dir_with(dir, &LoadOptions::on(device))
    }

    pub fn load_dir_with(dir: &Path, opts: &LoadOptions) -> Result<Engine> {
        opts.validate()?;
        let mut pre = prepacker(opts);
        let (weights, files) = read_dir_with(dir, &mut Prepacked::hook(&mut pre))?;
        let tokenizer = Tokenizer::from_dir(dir)?;
        Self::assemble(dir, weights, files, tokenizer, opts, pre)
    }

    /// An engine over weights already read (see [`crate::model::read_dir`]).
    pub fn from_weights(
        dir: &Path,
        weights: ModelWeights,
        weight_files: WeightFiles,
        tokenizer: Tokenizer,
        opts: &LoadOptions,
    ) -> Result<Engine> {
        Self::assemble(dir, weights, weight_files, tokenizer, opts, None)
    }

    fn assemble(
        dir: &Path,
        weights: ModelWeights,
        weight_files: WeightFiles,
        tokenizer: Tokenizer,
        opts: &LoadOptions,
        pre: Option<Prepacked>,
    ) -> Result<Engine> {
        opts.validate()?;
        let mut warnings = Vec::new();
        if !weights.unused_tensors.is_empty() {
            let n = weights.unused_tensors.len();
            let shown: Vec<&str> = weights
                .unused_tensors
                .iter()
                .take(5)
                .map(|s| s.as_str())
                .collect();
            warnings.push(format!(
                "{n} tensor(s) in {} not used by {}: {}{}",
                weight_files.source.display(),
                weights.config.architecture,
                shown.join(", "),
                if n > 5 { ", ..." } else { "" }
            ));
        }
        let config = weights.config.clone();
        let parameter_count = weights.parameter_count();
        let parameter_count_unshared = weights.parameter_count_unshared();
        let backend = make_backend_prepacked(weights, pre, opts, &mut warnings)?;
        Ok(Engine {
            dir: dir.to_path_buf(),
            config,
            tokenizer,
            backend,
            warnings,
            parameter_count,
            parameter_count_unshared,
            weight_files,
        })
    }

    pub fn backend_name(&self) -> String {
        self.backend.describe()
    }

    /// The format the forward pass computes in.
    pub fn dtype(&self) -> Dtype {
        self.backend.dtype()
    }

    /// Runs a packed batch: every output.
    pub fn forward(&self, batch: &Batch) -> Result<ForwardOutput> {
        self.backend.forward(batch)
    }

    /// Runs a packed batch for only what `want` asks (on a GPU, only that is
    /// computed and copied back).
    pub fn forward_want(&self, batch: &Batch, want: &Want) -> Result<Wanted> {
        self.backend.forward_want(batch, want)
    }

    /// Tokenizes (with the model's length limit) and packs many inputs.
    pub fn encode_batch(
        &self,
        inputs: &[(&str, Option<&str>)],
        max_len: Option<usize>,
        truncation: Truncation,
    ) -> Result<(Vec<Encoded>, Batch)> {
        let limit = max_len
            .unwrap_or(usize::MAX)
            .min(self.config.max_tokens_per_sequence());
        let mut encs = Vec::with_capacity(inputs.len());
        for (i, (text, pair)) in inputs.iter().enumerate() {
            let e = self
                .tokenizer
                .encode(text, *pair, limit, truncation)
                .map_err(|e| match e {
                    Error::Input(m) => Error::Input(format!("input {i}: {m}")),
                    other => other,
                })?;
            encs.push(e);
        }
        let seqs: Vec<SequenceIds> = encs
            .iter()
            .map(|e| SequenceIds {
                input_ids: e.ids.clone(),
                token_type_ids: e.type_ids.clone(),
            })
            .collect();
        let batch = Batch::pack(&seqs, &self.config)?;
        Ok((encs, batch))
    }
}

/// What packs the encoder's weights while they are read, where the options
/// resolve to a CPU path that gains from it (bf16), else None.
pub fn prepacker(opts: &LoadOptions) -> Option<Prepacked> {
    match (opts.resolved_device(), opts.dtype) {
        (Device::Cpu, Some(d)) => Prepacked::for_dtype(d),
        _ => None,
    }
}

/// The backend the options ask for, with a warning pushed when `Auto` falls
/// back to the CPU.
pub fn make_backend(
    weights: ModelWeights,
    opts: &LoadOptions,
    warnings: &mut Vec<String>,
) -> Result<Box<dyn Backend>> {
    make_backend_prepacked(weights, None, opts, warnings)
}

/// [`make_backend`] on weights read with the hook of [`prepacker`]`(opts)`.
pub fn make_backend_prepacked(
    weights: ModelWeights,
    pre: Option<Prepacked>,
    opts: &LoadOptions,
    warnings: &mut Vec<String>,
) -> Result<Box<dyn Backend>> {
    opts.validate()?;
    if pre.is_some() && opts.resolved_device() != Device::Cpu {
        return Err(Error::Internal(
            "weights packed for the CPU while loading, for another device".into(),
        ));
    }
    let dtype = opts.dtype.unwrap_or(Dtype::F32);
    let cpu = |w, pre, warnings: &mut Vec<String>| -> Result<Box<dyn Backend>> {
        let engine = CpuEngine::with_prepacked(w, dtype, opts.threads, pre)?;
        warnings.extend(engine.note.clone());
        Ok(Box::new(engine))
    };
    match opts.resolved_device() {
        Device::Cpu => cpu(weights, pre, warnings),
        Device::Cuda(n) => crate::backend::cuda::load(&weights, n, opts.cuda_graphs),
        // The device copy is made from the host weights, which stay for the
        // CPU fallback: no second host copy either way.
        Device::Auto => match crate::backend::cuda::load(&weights, 0, opts.cuda_graphs) {
            Ok(b) => Ok(b),
            Err(e) => {
                warnings.push(format!("no usable CUDA device ({e}); running on the CPU"));
                cpu(weights, None, warnings)
            }
        },
    }
}

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
//! scripts/compare_torch.py; with `heads`, `Backend::forward_want_timed` for
//! what the model's task asks ([`task_want`]: e.g. fill-mask's logits at one
//! mask row per sequence, not [tokens, vocab]), pooler and head included,
//! that answer copied back to the host. How: CUDA events around the call on
//! a GPU, the wall clock on the CPU (see [`Timer`]).

mod cell;
mod lengths;
pub mod presets;
mod report;

pub use cell::*;
pub use lengths::*;
pub use report::*;

use crate::batch::{Batch, SequenceIds};
use crate::config::{Head, ModelConfig};
use crate::engine::Backend;
use crate::error::{Error, Result};
use crate::output::Want;
use crate::tasks::embed::Pooling;
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant};

#[cfg(test)]
mod tests;

//! bertrt: inference for BERT-family encoders (BERT, ALBERT, RoBERTa, XLM-R, ELECTRA).
//!
//! Data flow: a HF model folder -> [`config::ModelConfig`] + [`weights`] ->
//! [`model::ModelWeights`] -> a backend; text -> [`tokenize`] -> a packed
//! [`batch::Batch`] -> forward -> [`output::ForwardOutput`].
//!
//! `unsafe` is denied everywhere but `backend::cuda`, `backend::emu`, the
//! weights mmap (`weights::map_file`) and `backend::cpu::native` (the gemm
//! crate and libm); each allows it where it is declared.
#![deny(unsafe_code)]

pub mod backend;
pub mod batch;
pub mod batcher;
pub mod bench;
pub mod config;
pub mod engine;
pub mod error;
pub mod hub;
pub mod input;
pub mod model;
pub mod options;
pub mod output;
pub mod panic_guard;
pub mod rng;
pub mod tasks;
pub mod tokenize;
pub mod weights;

pub use engine::{Device, Engine};
pub use error::{Error, Result};
pub use options::{Dtype, LoadOptions};

//! bertrt: inference for BERT-family encoders (BERT, ALBERT, RoBERTa, XLM-R, ELECTRA).
//!
//! Data flow: a HF model folder -> [`config::ModelConfig`] + [`weights`] ->
//! [`model::ModelWeights`] -> a backend; text -> [`tokenize`] -> a packed
//! [`batch::Batch`] -> forward -> [`output::ForwardOutput`].

pub mod backend;
pub mod batch;
pub mod batcher;
pub mod bench;
pub mod config;
pub mod engine;
pub mod error;
pub mod hub;
pub mod model;
pub mod output;
pub mod rng;
pub mod tasks;
pub mod tokenize;
pub mod weights;

pub use engine::{Device, Engine};
pub use error::{Error, Result};

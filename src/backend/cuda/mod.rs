//! The CUDA fp16 backend.
use crate::engine::Backend;
use crate::error::{Error, Result};
use crate::model::ModelWeights;

/// Uploads the model to CUDA device `ordinal`.
pub fn load(_weights: ModelWeights, ordinal: usize) -> Result<Box<dyn Backend>> {
    Err(Error::Device(format!(
        "cuda:{ordinal}: this build has no CUDA runtime backend yet"
    )))
}

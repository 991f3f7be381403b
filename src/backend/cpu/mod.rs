//! The f32 CPU engine: the reference every CUDA kernel is checked against and
//! the fallback where no GPU exists.
mod engine;
pub mod ops;

pub use engine::CpuEngine;

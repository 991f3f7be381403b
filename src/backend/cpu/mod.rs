//! The f32 CPU engine: the reference every CUDA kernel is checked against and
//! the fallback where no GPU exists.
mod engine;
mod native;
pub mod ops;

pub use engine::CpuEngine;

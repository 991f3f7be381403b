//! The f32 CPU engine: the reference every CUDA kernel is checked against and
//! the fallback where no GPU exists.
pub mod amx;
pub mod amx_attention;
mod dpbf16;
mod engine;
pub mod fast;
mod gelu_table;
mod huge_pages;
pub mod lines;
mod native;
pub mod ops;
pub mod packed;
pub mod path;
pub mod simd;
mod transpose;
mod workspace;

pub use engine::CpuEngine;

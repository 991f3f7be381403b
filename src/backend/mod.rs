//! Backends: `cpu` is the f32 reference and fallback; `cuda` the fp16 engine.
pub mod cpu;
pub mod cuda;
pub mod emu;
pub mod fp16;
pub mod kernels;

//! Backends: `cpu` is the f32 reference and fallback.
pub mod cpu;

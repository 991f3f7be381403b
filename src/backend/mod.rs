//! Backends: `cpu` is the f32 reference and fallback; `cuda` the fp16 engine.
pub mod cpu;
pub mod cuda;
/// The SIMT emulator: test machinery, Linux only, behind the `emulator` feature
/// (`cargo test` turns it on through the crate's dev-dependency on itself).
#[cfg(feature = "emulator")]
pub mod emu;
pub mod fp16;
pub mod kernels;

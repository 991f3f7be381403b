//! Backends: `cpu` is the f32 reference and fallback; `cuda` the fp16 engine.
pub mod cpu;
// The driver and cuBLAS FFI: every call is unsafe.
#[allow(unsafe_code)]
pub mod cuda;
/// The SIMT emulator: test machinery, Linux only, behind the `emulator` feature
/// (`cargo test` turns it on through the crate's dev-dependency on itself).
/// Runs the .cu sources compiled for the host through raw device addresses.
#[cfg(feature = "emulator")]
#[allow(unsafe_code)]
pub mod emu;
pub mod fp16;
pub mod kernels;

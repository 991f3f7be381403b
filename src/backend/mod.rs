//! Backends: `cpu` is the f32 reference and fallback; `cuda` the fp16 engine.
pub mod cpu;
// The driver and cuBLAS FFI: every call is unsafe.
#[allow(unsafe_code)]
pub mod cuda;
// Runs the .cu sources compiled for the host through raw device addresses.
#[allow(unsafe_code)]
pub mod emu;
pub mod fp16;
pub mod kernels;

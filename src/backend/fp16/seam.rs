//! The launch seam: what the fp16 forward pass needs from a device. Two
//! implementations: CUDA (`backend::cuda`, cudarc + cuBLAS) and the CPU SIMT
//! emulation (`backend::emu`), so the same forward code, params structs and
//! launch geometry run in tests on machines without a GPU.

use crate::backend::kernels::Geometry;
use crate::error::Result;

/// A device address (a `CUdeviceptr`, or a host address under emulation).
pub type DevPtr = u64;

/// A kernel's params struct: every kernel takes exactly one, by value.
pub trait Launch: Copy + Send + 'static {
    /// The exported `extern "C"` kernel name in the fatbin.
    const NAME: &'static str;
    /// The same kernel compiled for the host (SIMT emulation). Only a type
    /// here (no unsafe code: the crate's deny(unsafe_code) allows it); the one
    /// call through it is in `backend::emu`.
    #[cfg(feature = "emulator")]
    const HOST: unsafe extern "C" fn(Self);
}

/// What [`Seam::gemm_bias`] applies after the product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Epilogue {
    /// `+ bias`: the linears without an activation (QKV, pooler input, heads).
    Bias,
    /// `gelu_tanh(· + bias)`, the tanh form of GELU, for models whose
    /// `hidden_act` is that form (`gelu_new`, `gelu_pytorch_tanh`) and only
    /// those: erf-GELU stays the exact bias_act kernel, never this.
    BiasGeluTanh,
}

pub trait Seam: Send + Sync {
    /// Zero-filled device memory, freed by [`Seam::free`] or when the seam drops.
    fn alloc(&self, bytes: usize) -> Result<DevPtr>;
    fn free(&self, ptr: DevPtr) -> Result<()>;
    fn upload(&self, dst: DevPtr, src: &[u8]) -> Result<()>;
    fn download(&self, src: DevPtr, dst: &mut [u8]) -> Result<()>;
    /// Runs a kernel. The params' device pointers must cover everything the
    /// kernel touches for its sizes; neither seam can check that for an
    /// arbitrary params struct (a bad pointer faults the CUDA context, and
    /// under emulation reads host memory), so only the fp16 forward pass,
    /// which sizes its workspace for the params it builds, should call it.
    fn launch<P: Launch>(&self, params: P, geometry: Geometry) -> Result<()>;
    /// `y[m, n] = x[m, k] · w[n, k]^T`: fp16 in and out, fp32 accumulation.
    fn gemm(&self, x: DevPtr, w: DevPtr, y: DevPtr, m: usize, n: usize, k: usize) -> Result<()>;
    /// `y[m, n] = epilogue(x[m, k] · w[n, k]^T + bias[n])` in one pass: fp16
    /// in and out, the product accumulated in fp32, the bias (fp16) added in
    /// fp32 and the activation applied in fp32 before the one rounding to
    /// fp16 (cuBLASLt's BIAS / GELU_BIAS epilogues: the epilogue runs in the
    /// compute type, on the accumulator, before the conversion to D's type).
    #[allow(clippy::too_many_arguments)]
    fn gemm_bias(
        &self,
        x: DevPtr,
        w: DevPtr,
        bias: DevPtr,
        y: DevPtr,
        m: usize,
        n: usize,
        k: usize,
        epilogue: Epilogue,
    ) -> Result<()>;
    /// Asks the device to keep `[ptr, ptr + bytes)` resident in L2 (a
    /// persisting access-policy window over the launches that follow), or,
    /// with `None`, to stop. Returns what was done, in words, for the bench
    /// output. Devices without the feature, and the emulation, say so and
    /// do nothing.
    fn l2_persist(&self, window: Option<(DevPtr, usize)>) -> Result<String> {
        Ok(match window {
            None => "L2 persistence: off".into(),
            Some(_) => "L2 persistence: off (not available on this device)".into(),
        })
    }
    fn synchronize(&self) -> Result<()>;
    /// e.g. "cuda:0 NVIDIA H100 80GB HBM3 (sm_90)".
    fn describe(&self) -> String;
    /// Bytes of device memory free now, where the device can tell.
    fn free_memory(&self) -> Option<usize> {
        None
    }
    /// Opens a named profiler range (NVTX on CUDA when enabled).
    fn range_push(&self, _name: &str) {}
    fn range_pop(&self) {}
}

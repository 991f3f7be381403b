//! The launch seam: what the fp16 forward pass needs from a device. Two
//! implementations: CUDA (`backend::cuda`, cudarc + cuBLAS) and the CPU SIMT
//! emulation (`backend::emu`), so the same forward code, params structs and
//! launch geometry run in tests on machines without a GPU.
//!
//! Everything a forward pass issues is ordered on one stream per seam: the
//! staging upload, the launches, the GEMMs, the readback copies; the host
//! waits once, in [`Seam::synchronize`], when it needs the results.

use crate::backend::kernels::Geometry;
use crate::error::Result;
use std::sync::atomic::{AtomicU64, Ordering};

/// A device address (a `CUdeviceptr`, or a host address under emulation).
pub type DevPtr = u64;

/// A captured launch list (a CUDA graph), by the seam's own number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GraphId(pub usize);

/// A kernel's params struct: every kernel takes exactly one, by value.
pub trait Launch: Copy + Send + Sync + 'static {
    /// The exported `extern "C"` kernel name in the fatbin.
    const NAME: &'static str;
    /// The same kernel compiled for the host (SIMT emulation). Only a type
    /// here (no unsafe code: the crate's deny(unsafe_code) allows it); the one
    /// call through it is in `backend::emu`.
    #[cfg(feature = "emulator")]
    const HOST: unsafe extern "C" fn(Self);
}

/// Copies and host waits a seam has done since it was opened (weights
/// included): what `bertrt bench` reports per iteration and the tests count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub uploads: u64,
    pub upload_bytes: u64,
    pub downloads: u64,
    pub download_bytes: u64,
    /// Host waits on the stream (explicit or inside a copy).
    pub syncs: u64,
}

impl Traffic {
    /// `self - earlier`, field by field.
    pub fn since(&self, earlier: &Traffic) -> Traffic {
        Traffic {
            uploads: self.uploads - earlier.uploads,
            upload_bytes: self.upload_bytes - earlier.upload_bytes,
            downloads: self.downloads - earlier.downloads,
            download_bytes: self.download_bytes - earlier.download_bytes,
            syncs: self.syncs - earlier.syncs,
        }
    }
}

/// The counters behind [`Seam::traffic`], shared by both seams.
#[derive(Default)]
pub struct TrafficCounter {
    uploads: AtomicU64,
    upload_bytes: AtomicU64,
    downloads: AtomicU64,
    download_bytes: AtomicU64,
    syncs: AtomicU64,
}

impl TrafficCounter {
    pub fn upload(&self, bytes: usize) {
        self.uploads.fetch_add(1, Ordering::Relaxed);
        self.upload_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
    pub fn download(&self, bytes: usize) {
        self.downloads.fetch_add(1, Ordering::Relaxed);
        self.download_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }
    pub fn sync(&self) {
        self.syncs.fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(&self) -> Traffic {
        Traffic {
            uploads: self.uploads.load(Ordering::Relaxed),
            upload_bytes: self.upload_bytes.load(Ordering::Relaxed),
            downloads: self.downloads.load(Ordering::Relaxed),
            download_bytes: self.download_bytes.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
        }
    }
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
    /// Synchronous copies (the weights, at load; tests).
    fn upload(&self, dst: DevPtr, src: &[u8]) -> Result<()>;
    fn download(&self, src: DevPtr, dst: &mut [u8]) -> Result<()>;
    /// A copy ordered on the seam's stream, through its pinned staging
    /// buffer (`src` is copied there first, so it may be reused at once).
    /// The forward pass makes one per batch.
    fn upload_async(&self, dst: DevPtr, src: &[u8]) -> Result<()>;
    /// Makes the pinned readback buffer hold at least `bytes`. Call it only
    /// when no readback is pending (before a forward's first download).
    fn reserve_readback(&self, bytes: usize) -> Result<()>;
    /// A copy of `bytes` at `src` into the readback buffer at `offset`,
    /// ordered on the stream: readable by [`Seam::read_back`] after the next
    /// [`Seam::synchronize`].
    fn download_async(&self, src: DevPtr, offset: usize, bytes: usize) -> Result<()>;
    /// The readback buffer's `[offset, offset + dst.len())`.
    fn read_back(&self, offset: usize, dst: &mut [u8]) -> Result<()>;
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
    /// Waits for everything issued on the stream.
    fn synchronize(&self) -> Result<()>;
    /// Copies and waits so far.
    fn traffic(&self) -> Traffic;
    /// Whether the seam can capture graphs (else the forward runs eagerly).
    fn supports_graphs(&self) -> bool {
        false
    }
    /// Starts recording launches and GEMMs instead of running them (CUDA
    /// stream capture). Copies are not allowed while recording.
    fn begin_capture(&self) -> Result<()> {
        Err(crate::Error::Unsupported(format!(
            "{}: no CUDA graphs",
            self.describe()
        )))
    }
    /// Stops recording; the list becomes a graph to [`Seam::replay`].
    fn end_capture(&self) -> Result<GraphId> {
        Err(crate::Error::Unsupported(format!(
            "{}: no CUDA graphs",
            self.describe()
        )))
    }
    /// Issues a recorded list on the stream, with the same params and
    /// pointers it was recorded with.
    fn replay(&self, _graph: GraphId) -> Result<()> {
        Err(crate::Error::Unsupported(format!(
            "{}: no CUDA graphs",
            self.describe()
        )))
    }
    /// Frees a graph (its buffers are about to go).
    fn destroy_graph(&self, _graph: GraphId) -> Result<()> {
        Ok(())
    }
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

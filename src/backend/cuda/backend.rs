//! The fp16 model on a CUDA device as an engine backend: device timing by
//! events on the seam's stream, the profiler switches, and loading.

use super::{drv_err, CudaSeam};
use crate::backend::fp16::{Fp16Model, Seam, Traffic};
use crate::batch::Batch;
use crate::engine::Backend;
use crate::error::{Error, Result};
use crate::model::ModelWeights;
use crate::output::{ForwardOutput, Want, Wanted};
use cudarc::driver::{result as drv, sys as drv_sys};
use std::sync::atomic::Ordering;

/// The fp16 model on a CUDA device, as an engine backend.
pub struct CudaBackend {
    model: Fp16Model<CudaSeam>,
}

impl Backend for CudaBackend {
    fn forward(&self, batch: &Batch) -> Result<ForwardOutput> {
        self.model.forward(batch)
    }

    fn forward_want(&self, batch: &Batch, want: &Want) -> Result<Wanted> {
        self.model.forward_want(batch, want)
    }

    fn describe(&self) -> String {
        self.model.seam().describe()
    }

    fn device_traffic(&self) -> Option<Traffic> {
        Some(self.model.traffic())
    }

    fn set_nvtx(&self, on: bool) -> Result<()> {
        // SAFETY: only probes for the shared library.
        if on && !unsafe { cudarc::nvtx::sys::is_culib_present() } {
            return Err(Error::Device(
                "NVTX ranges: libnvToolsExt.so could not be loaded (the CUDA toolkit's, or PyTorch's nvidia/nvtx/lib, on LD_LIBRARY_PATH)".into(),
            ));
        }
        self.model.seam().nvtx.store(on, Ordering::Relaxed);
        Ok(())
    }

    fn set_l2_persist(&self, on: bool) -> Result<String> {
        self.model.set_l2_persist(on)
    }

    fn profiler(&self, on: bool) -> Result<()> {
        let seam = self.model.seam();
        seam.bind()?;
        // SAFETY: plain driver calls in the bound context.
        let r = unsafe {
            if on {
                drv_sys::cuProfilerStart()
            } else {
                drv_sys::cuProfilerStop()
            }
        };
        r.result().map_err(drv_err(if on {
            "cuProfilerStart"
        } else {
            "cuProfilerStop"
        }))
    }

    fn forward_want_timed(&self, batch: &Batch, want: &Want) -> Result<(Wanted, Option<f64>)> {
        self.timed(|| self.model.forward_want(batch, want))
            .map(|(o, ms)| (o, Some(ms)))
    }

    fn encode_timed(&self, batch: &Batch) -> Result<Option<f64>> {
        self.timed(|| self.model.encode(batch))
            .map(|((), ms)| Some(ms))
    }
}

/// A CUDA event, destroyed when dropped.
struct Event(drv_sys::CUevent);

impl Event {
    /// In the bound context.
    fn new() -> Result<Event> {
        drv::event::create(drv_sys::CUevent_flags::CU_EVENT_DEFAULT)
            .map(Event)
            .map_err(drv_err("cuEventCreate"))
    }

    /// Recorded on `stream`, the seam's, which the forward pass uses.
    fn record(&self, stream: drv_sys::CUstream) -> Result<()> {
        // SAFETY: `self.0` is a live event of the bound context, `stream` a
        // live stream of it.
        unsafe { drv::event::record(self.0, stream) }.map_err(drv_err("cuEventRecord"))
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        // SAFETY: created by cuEventCreate, destroyed once, here.
        let _ = unsafe { drv::event::destroy(self.0) };
    }
}

impl CudaBackend {
    /// `f` between two events on the seam's stream; its result and the
    /// device milliseconds between them.
    fn timed<R>(&self, f: impl FnOnce() -> Result<R>) -> Result<(R, f64)> {
        let seam = self.model.seam();
        seam.bind()?;
        let (start, end) = (Event::new()?, Event::new()?);
        start.record(seam.stream.0)?;
        let r = f()?;
        end.record(seam.stream.0)?;
        // SAFETY: both events are live and were recorded above.
        let ms = unsafe {
            drv::event::synchronize(end.0).map_err(drv_err("cuEventSynchronize"))?;
            drv::event::elapsed(start.0, end.0).map_err(drv_err("cuEventElapsedTime"))?
        };
        Ok((r, ms as f64))
    }
}

/// Uploads the model to CUDA device `ordinal`; `graphs`: CUDA graphs for
/// small batches.
pub fn load(weights: &ModelWeights, ordinal: usize, graphs: bool) -> Result<Box<dyn Backend>> {
    let seam = CudaSeam::open(ordinal)?;
    let model = Fp16Model::new(seam, weights)?;
    model.set_graphs(graphs);
    Ok(Box::new(CudaBackend { model }))
}

/// Whether device `ordinal`'s primary context is alive, i.e. retained by
/// someone in this process (tests/gpu.rs: a failed open must release it).
#[doc(hidden)]
pub fn primary_context_active(ordinal: usize) -> Result<bool> {
    // SAFETY: only probes for the shared library (dlopen), no CUDA call.
    if !unsafe { drv_sys::is_culib_present() } {
        return Err(Error::Device(
            "no NVIDIA driver: libcuda.so could not be loaded".into(),
        ));
    }
    drv::init().map_err(drv_err("cuInit"))?;
    let dev = drv::device::get(ordinal as i32).map_err(drv_err("cuDeviceGet"))?;
    let (mut flags, mut active) = (0u32, 0i32);
    // SAFETY: `dev` came from cuDeviceGet; both out-pointers are live locals.
    unsafe { drv_sys::cuDevicePrimaryCtxGetState(dev, &mut flags, &mut active) }
        .result()
        .map_err(drv_err("cuDevicePrimaryCtxGetState"))?;
    Ok(active != 0)
}

/// Whether a usable CUDA device is present (for GPU tests' loud skip).
pub fn available() -> std::result::Result<String, String> {
    CudaSeam::open(0)
        .map(|s| s.describe())
        .map_err(|e| e.to_string())
}

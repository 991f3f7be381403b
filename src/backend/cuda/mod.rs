//! The CUDA fp16 backend: the launch [`Seam`] over the CUDA driver API and
//! cuBLAS (both loaded at run time by cudarc, so the binary starts on a
//! machine without libcuda), plus the checks that turn a missing driver, a
//! missing device, an old GPU or a full memory into clear errors.
//!
//! This module holds all of the CUDA backend's `unsafe`.
//!
//! Debug switch: `BERTRT_SYNC_CHECK=1` synchronises after every launch and
//! names the kernel that failed.

use crate::backend::fp16::{check_geometry, DevPtr, Fp16Model, Launch, Seam};
use crate::backend::kernels::Geometry;
use crate::batch::Batch;
use crate::engine::Backend;
use crate::error::{Error, Result};
use crate::model::ModelWeights;
use crate::output::{ForwardOutput, Want, Wanted};
use cudarc::cublas::{result as blas, sys as blas_sys};
use cudarc::driver::{result as drv, sys as drv_sys};
use std::collections::{HashMap, HashSet};
use std::ffi::{c_void, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

#[cfg(bertrt_fatbin)]
static FATBIN: &[u8] = include_bytes!(env!("BERTRT_FATBIN"));
#[cfg(not(bertrt_fatbin))]
static FATBIN: &[u8] = &[];

fn drv_err(what: &str) -> impl Fn(drv::DriverError) -> Error + '_ {
    move |e| Error::Device(format!("{what}: {e:?}"))
}

/// A retained primary context, released when dropped: on every early return
/// of [`CudaSeam::open`] as well as with the seam.
struct PrimaryContext {
    dev: drv_sys::CUdevice,
    ctx: drv_sys::CUcontext,
}

impl Drop for PrimaryContext {
    fn drop(&mut self) {
        // SAFETY: `dev` came from cuDeviceGet and this guard holds one retain.
        let _ = unsafe { drv::primary_ctx::release(self.dev) };
    }
}

/// A loaded module, unloaded when dropped (its context must still be alive:
/// CudaSeam declares it before the context, and `open` creates it after).
struct Module(drv_sys::CUmodule);

impl Drop for Module {
    fn drop(&mut self) {
        // SAFETY: loaded by cuModuleLoadData, unloaded once, here.
        let _ = unsafe { drv::module::unload(self.0) };
    }
}

/// A cuBLAS handle, destroyed when dropped.
struct Cublas(blas_sys::cublasHandle_t);

impl Drop for Cublas {
    fn drop(&mut self) {
        // SAFETY: created by cublasCreate, destroyed once, here.
        let _ = unsafe { blas::destroy_handle(self.0) };
    }
}

pub struct CudaSeam {
    ordinal: usize,
    description: String,
    functions: HashMap<&'static str, drv_sys::CUfunction>,
    allocations: Mutex<HashSet<DevPtr>>,
    sync_check: bool,
    /// NVTX ranges on (set by `--nvtx`; libnvToolsExt checked when turned on).
    nvtx: AtomicBool,
    // Fields drop in declaration order, after `Drop::drop` frees the
    // allocations: the cuBLAS handle, then the module, then the context.
    /// Locked for every cuBLAS call: a handle must not be used by two threads
    /// at once, whoever holds the seam.
    cublas: Mutex<Cublas>,
    /// Held for its Drop: the functions above live in it.
    _module: Module,
    ctx: PrimaryContext,
}

// SAFETY: the raw handles are used only after binding the context to the
// calling thread (every Seam method does), and cuBLAS calls are serialised by
// the handle's own lock; CUDA contexts may be used from any thread.
unsafe impl Send for CudaSeam {}
unsafe impl Sync for CudaSeam {}

impl CudaSeam {
    /// Opens device `ordinal`: driver, device, compute capability >= 8.0,
    /// the embedded kernels, cuBLAS. Each failure is a clear error, and
    /// releases whatever was acquired before it.
    pub fn open(ordinal: usize) -> Result<CudaSeam> {
        Self::open_with_kernels(ordinal, crate::backend::kernels::KERNEL_NAMES)
    }

    /// [`CudaSeam::open`], looking up `kernels` in the fatbin instead of the
    /// model's set. A name that is missing fails after the context and the
    /// module exist: tests/gpu.rs uses that to check the error path leaks
    /// neither.
    #[doc(hidden)]
    pub fn open_with_kernels(ordinal: usize, kernels: &[&'static str]) -> Result<CudaSeam> {
        if FATBIN.is_empty() {
            return Err(Error::Device(
                "this bertrt was built without CUDA kernels (nvcc was not found at build time; see scripts/install-nvcc.sh)".into(),
            ));
        }
        // SAFETY: only probes for the shared library (dlopen), no CUDA call.
        if !unsafe { drv_sys::is_culib_present() } {
            return Err(Error::Device(
                "no NVIDIA driver: libcuda.so could not be loaded".into(),
            ));
        }
        drv::init().map_err(drv_err("cuInit"))?;
        let count = drv::device::get_count().map_err(drv_err("cuDeviceGetCount"))?;
        if ordinal as i32 >= count {
            return Err(Error::Device(format!(
                "cuda:{ordinal} does not exist ({count} CUDA device(s) found)"
            )));
        }
        let dev = drv::device::get(ordinal as i32).map_err(drv_err("cuDeviceGet"))?;
        let attr = |a| {
            // SAFETY: `dev` came from cuDeviceGet above.
            unsafe { drv::device::get_attribute(dev, a) }.map_err(drv_err("cuDeviceGetAttribute"))
        };
        let major =
            attr(drv_sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
        let minor =
            attr(drv_sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
        let name = drv::device::get_name(dev).unwrap_or_else(|_| "unknown GPU".into());
        if major < 8 {
            return Err(Error::Device(format!(
                "cuda:{ordinal} {name} has compute capability {major}.{minor}; bertrt needs 8.0 or newer"
            )));
        }
        // SAFETY: `dev` is valid; the guard releases the retain when dropped.
        let ctx = PrimaryContext {
            dev,
            ctx: unsafe { drv::primary_ctx::retain(dev) }
                .map_err(drv_err("cuDevicePrimaryCtxRetain"))?,
        };
        // SAFETY: `ctx` was just retained.
        unsafe { drv::ctx::set_current(ctx.ctx) }.map_err(drv_err("cuCtxSetCurrent"))?;
        // cuModuleLoadData wants an aligned image; include_bytes! is not.
        let mut image = vec![0u64; FATBIN.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut image)[..FATBIN.len()].copy_from_slice(FATBIN);
        // SAFETY: `image` is the fatbin nvcc wrote, alive for the call.
        let module = unsafe { drv::module::load_data(image.as_ptr() as *const c_void) }.map(Module).map_err(|e| {
            Error::Device(format!(
                "loading bertrt's kernels on {name} (sm_{major}{minor}): {e:?}; the fatbin has SASS for sm_80/86/89/90 and PTX for compute_90"
            ))
        })?;
        let mut functions = HashMap::new();
        for &k in kernels {
            let c = CString::new(k).expect("kernel names have no NUL");
            // SAFETY: `module` was loaded above and is never unloaded before Drop.
            let f = unsafe { drv::module::get_function(module.0, c) }
                .map_err(|e| Error::Device(format!("kernel {k} missing from the fatbin: {e:?}")))?;
            functions.insert(k, f);
        }
        // SAFETY: probes for the shared library only.
        if !unsafe { blas_sys::is_culib_present() } {
            return Err(Error::Device(
                "cuBLAS (libcublas.so / libcublasLt.so) could not be loaded: add the CUDA toolkit's lib64, or PyTorch's site-packages/nvidia/cublas/lib, to LD_LIBRARY_PATH".into(),
            ));
        }
        let cublas = blas::create_handle()
            .map(Cublas)
            .map_err(|e| Error::Device(format!("cublasCreate: {e:?}")))?;
        // SAFETY: `dev` came from cuDeviceGet above; the call only reads.
        let total = unsafe { drv::device::total_mem(dev) }.unwrap_or(0);
        Ok(CudaSeam {
            ordinal,
            description: format!(
                "cuda:{ordinal} {name} (sm_{major}{minor}, {} GiB, fp16)",
                total >> 30
            ),
            functions,
            allocations: Mutex::new(HashSet::new()),
            sync_check: std::env::var("BERTRT_SYNC_CHECK").is_ok_and(|v| v != "0"),
            nvtx: AtomicBool::new(false),
            cublas: Mutex::new(cublas),
            _module: module,
            ctx,
        })
    }

    fn bind(&self) -> Result<()> {
        // SAFETY: `ctx` is retained for the seam's lifetime.
        unsafe { drv::ctx::set_current(self.ctx.ctx) }.map_err(drv_err("cuCtxSetCurrent"))
    }
}

impl Seam for CudaSeam {
    fn alloc(&self, bytes: usize) -> Result<DevPtr> {
        self.bind()?;
        // SAFETY: plain allocation in the bound context.
        let p = unsafe { drv::malloc_sync(bytes) }.map_err(|e| {
            let (free, total) = drv::mem_get_info().unwrap_or((0, 0));
            Error::Device(format!(
                "cuda:{}: cannot allocate {} MiB ({e:?}); {} MiB free of {} MiB",
                self.ordinal,
                bytes >> 20,
                free >> 20,
                total >> 20
            ))
        })?;
        // SAFETY: `p` points to `bytes` bytes just allocated.
        unsafe { drv::memset_d8_sync(p, 0, bytes) }.map_err(drv_err("cuMemsetD8"))?;
        self.allocations.lock().unwrap().insert(p);
        Ok(p)
    }

    fn free(&self, ptr: DevPtr) -> Result<()> {
        self.bind()?;
        if self.allocations.lock().unwrap().remove(&ptr) {
            // SAFETY: `ptr` came from `alloc` and is freed once (removed above).
            unsafe { drv::free_sync(ptr) }.map_err(drv_err("cuMemFree"))?;
        }
        Ok(())
    }

    fn upload(&self, dst: DevPtr, src: &[u8]) -> Result<()> {
        self.bind()?;
        // SAFETY: callers pass a `dst` allocated with at least `src.len()` bytes.
        unsafe { drv::memcpy_htod_sync(dst, src) }.map_err(drv_err("cuMemcpyHtoD"))
    }

    fn download(&self, src: DevPtr, dst: &mut [u8]) -> Result<()> {
        self.bind()?;
        // SAFETY: callers pass a `src` holding at least `dst.len()` bytes.
        unsafe { drv::memcpy_dtoh_sync(dst, src) }.map_err(drv_err("cuMemcpyDtoH"))
    }

    fn launch<P: Launch>(&self, params: P, g: Geometry) -> Result<()> {
        check_geometry(P::NAME, &g)?;
        if g.grid.0 == 0 {
            return Ok(());
        }
        self.bind()?;
        let f = *self
            .functions
            .get(P::NAME)
            .ok_or_else(|| Error::Device(format!("kernel {} not loaded", P::NAME)))?;
        if g.smem_bytes > 48 * 1024 {
            // SAFETY: `f` is a function of the loaded module.
            unsafe {
                drv::function::set_function_attribute(
                    f,
                    drv_sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    g.smem_bytes as i32,
                )
            }
            .map_err(|e| {
                Error::Device(format!(
                    "{}: {} bytes of shared memory: {e:?}",
                    P::NAME,
                    g.smem_bytes
                ))
            })?;
        }
        let mut p = params;
        let mut args = [&mut p as *mut P as *mut c_void];
        // SAFETY: every kernel takes exactly one params struct by value (the
        // `Launch` contract); the pointers inside were allocated by this seam
        // and sized by Fp16Model for this batch.
        unsafe {
            drv::launch_kernel(
                f,
                g.grid,
                g.block,
                g.smem_bytes,
                std::ptr::null_mut(),
                &mut args,
            )
        }
        .map_err(|e| Error::Device(format!("launching {}: {e:?}", P::NAME)))?;
        if self.sync_check {
            // SAFETY: the context is bound; null is the legacy default stream.
            unsafe { drv::stream::synchronize(std::ptr::null_mut()) }
                .map_err(|e| Error::Device(format!("{} failed: {e:?}", P::NAME)))?;
        }
        Ok(())
    }

    fn gemm(&self, x: DevPtr, w: DevPtr, y: DevPtr, m: usize, n: usize, k: usize) -> Result<()> {
        if m == 0 || n == 0 {
            return Ok(());
        }
        self.bind()?;
        let cublas = self.cublas.lock().unwrap_or_else(|p| p.into_inner());
        let (alpha, beta) = (1.0f32, 0.0f32);
        // Row-major y[m,n] = x[m,k] w[n,k]^T is column-major y^T[n,m] = w^T... :
        // C(n x m) = op(A)=W^T(n x k) * B=X(k x m), with A = w (k x n col-major).
        // SAFETY: x, w, y are device buffers of m*k, n*k, m*n halves (the
        // caller's contract); alpha/beta are host f32 as COMPUTE_32F expects.
        unsafe {
            blas::gemm_ex(
                cublas.0,
                blas_sys::cublasOperation_t::CUBLAS_OP_T,
                blas_sys::cublasOperation_t::CUBLAS_OP_N,
                n as i32,
                m as i32,
                k as i32,
                &alpha as *const f32 as *const c_void,
                w as *const c_void,
                blas_sys::cudaDataType::CUDA_R_16F,
                k as i32,
                x as *const c_void,
                blas_sys::cudaDataType::CUDA_R_16F,
                k as i32,
                &beta as *const f32 as *const c_void,
                y as *mut c_void,
                blas_sys::cudaDataType::CUDA_R_16F,
                n as i32,
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| Error::Device(format!("cublasGemmEx {m}x{n}x{k}: {e:?}")))?;
        drop(cublas);
        if self.sync_check {
            self.synchronize()?;
        }
        Ok(())
    }

    fn synchronize(&self) -> Result<()> {
        self.bind()?;
        // SAFETY: the context is bound; null is the legacy default stream.
        unsafe { drv::stream::synchronize(std::ptr::null_mut()) }.map_err(drv_err("synchronize"))
    }

    fn describe(&self) -> String {
        self.description.clone()
    }

    fn free_memory(&self) -> Option<usize> {
        self.bind().ok()?;
        drv::mem_get_info().ok().map(|(free, _)| free)
    }

    fn range_push(&self, name: &str) {
        if self.nvtx.load(Ordering::Relaxed) {
            cudarc::nvtx::result::range_push(name);
        }
    }

    fn range_pop(&self) {
        if self.nvtx.load(Ordering::Relaxed) {
            cudarc::nvtx::result::range_pop();
        }
    }
}

impl Drop for CudaSeam {
    fn drop(&mut self) {
        let _ = self.bind();
        for p in self.allocations.lock().unwrap().drain() {
            // SAFETY: each pointer came from `alloc` and is freed once.
            let _ = unsafe { drv::free_sync(p) };
        }
        // The cuBLAS handle, the module and the context go with their fields.
    }
}

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

    fn forward_timed(&self, batch: &Batch) -> Result<(ForwardOutput, Option<f64>)> {
        self.timed(|| self.model.forward(batch))
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

    /// Recorded on the legacy default stream, the one the forward pass uses.
    fn record(&self) -> Result<()> {
        // SAFETY: `self.0` is a live event of the bound context.
        unsafe { drv::event::record(self.0, std::ptr::null_mut()) }
            .map_err(drv_err("cuEventRecord"))
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        // SAFETY: created by cuEventCreate, destroyed once, here.
        let _ = unsafe { drv::event::destroy(self.0) };
    }
}

impl CudaBackend {
    /// `f` between two events on the default stream; its result and the
    /// device milliseconds between them.
    fn timed<R>(&self, f: impl FnOnce() -> Result<R>) -> Result<(R, f64)> {
        self.model.seam().bind()?;
        let (start, end) = (Event::new()?, Event::new()?);
        start.record()?;
        let r = f()?;
        end.record()?;
        // SAFETY: both events are live and were recorded above.
        let ms = unsafe {
            drv::event::synchronize(end.0).map_err(drv_err("cuEventSynchronize"))?;
            drv::event::elapsed(start.0, end.0).map_err(drv_err("cuEventElapsedTime"))?
        };
        Ok((r, ms as f64))
    }
}

/// Uploads the model to CUDA device `ordinal`.
pub fn load(weights: &ModelWeights, ordinal: usize) -> Result<Box<dyn Backend>> {
    let seam = CudaSeam::open(ordinal)?;
    let model = Fp16Model::new(seam, weights)?;
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

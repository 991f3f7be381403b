//! The CUDA fp16 backend: the launch [`Seam`] over the CUDA driver API and
//! cuBLAS (both loaded at run time by cudarc, so the binary starts on a
//! machine without libcuda), plus the checks that turn a missing driver, a
//! missing device, an old GPU or a full memory into clear errors.
//!
//! This module holds all of the CUDA backend's `unsafe`.
//!
//! Every copy, launch, cuBLAS call and event goes on one non-blocking stream
//! per seam (cuBLAS's handle is bound to it, with a workspace of its own so
//! it can be captured into graphs); the host waits only in `synchronize`
//! (and in the synchronous copies of the weights at load).
//!
//! Debug switch: `BERTRT_SYNC_CHECK=1` synchronises after every launch and
//! names the kernel that failed.

mod backend;
mod lt;
mod stream;

pub use backend::{available, load, primary_context_active, CudaBackend};

use crate::backend::fp16::{
    check_geometry, DevPtr, Epilogue, GraphId, Launch, Seam, Traffic, TrafficCounter,
};
use crate::backend::kernels::Geometry;
use crate::error::{Error, Result};
use cudarc::cublas::{result as blas, sys as blas_sys};
use cudarc::driver::{result as drv, sys as drv_sys};
use std::collections::{HashMap, HashSet};
use std::ffi::{c_void, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use stream::{Graph, Pinned, Stream};

/// cuBLAS's workspace: with one set, GEMMs may be captured into a graph
/// (cuBLAS then allocates nothing during capture). NVIDIA's guidance for
/// Hopper is 32 MiB.
const CUBLAS_WORKSPACE_BYTES: usize = 32 << 20;

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
    traffic: TrafficCounter,
    /// While a graph is being captured (no host waits then).
    capturing: AtomicBool,
    /// By GraphId; None once destroyed.
    graphs: Mutex<Vec<Option<Graph>>>,
    // Fields drop in declaration order, after `Drop::drop` frees the
    // allocations: cuBLASLt (it frees its workspace), the graphs above, the
    // cuBLAS handle, the stream, the pinned buffers, then the module, then
    // the context.
    /// cuBLASLt (fused-epilogue GEMMs and their per-shape plans), locked
    /// for every call like `cublas`.
    lt: Mutex<lt::Lt>,
    /// Locked for every cuBLAS call: a handle must not be used by two threads
    /// at once, whoever holds the seam.
    cublas: Mutex<Cublas>,
    /// The one stream everything is issued on.
    stream: Stream,
    /// Pinned: the staging upload's source, and the readbacks' destination.
    staging: Mutex<Pinned>,
    readback: Mutex<Pinned>,
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
        let stream = Stream::new()?;
        // SAFETY: plain allocation in the bound context; freed below on
        // failure, else by the seam's Drop (it joins `allocations`).
        let blas_ws = unsafe { drv::malloc_sync(CUBLAS_WORKSPACE_BYTES) }
            .map_err(drv_err("cuMemAlloc (cuBLAS workspace)"))?;
        // SAFETY: the handle and stream are live; the workspace is ours, of
        // the size given, and outlives the handle's use of it (freed in Drop
        // after the last GEMM).
        let bound = unsafe {
            blas::set_stream(cublas.0, stream.0 as blas_sys::cudaStream_t).and_then(|()| {
                blas_sys::cublasSetWorkspace_v2(
                    cublas.0,
                    blas_ws as *mut c_void,
                    CUBLAS_WORKSPACE_BYTES,
                )
                .result()
            })
        };
        if let Err(e) = bound {
            // SAFETY: allocated above, unused, freed once.
            let _ = unsafe { drv::free_sync(blas_ws) };
            return Err(Error::Device(format!(
                "binding cuBLAS to the stream: {e:?}"
            )));
        }
        let lt = lt::Lt::new()?;
        // SAFETY: `dev` came from cuDeviceGet above; the call only reads.
        let total = unsafe { drv::device::total_mem(dev) }.unwrap_or(0);
        Ok(CudaSeam {
            ordinal,
            description: format!(
                "cuda:{ordinal} {name} (sm_{major}{minor}, {} GiB, fp16)",
                total >> 30
            ),
            functions,
            allocations: Mutex::new(HashSet::from([blas_ws])),
            sync_check: std::env::var("BERTRT_SYNC_CHECK").is_ok_and(|v| v != "0"),
            nvtx: AtomicBool::new(false),
            traffic: TrafficCounter::default(),
            capturing: AtomicBool::new(false),
            graphs: Mutex::new(Vec::new()),
            lt: Mutex::new(lt),
            cublas: Mutex::new(cublas),
            stream,
            staging: Mutex::new(Pinned::empty()),
            readback: Mutex::new(Pinned::empty()),
            _module: module,
            ctx,
        })
    }

    fn bind(&self) -> Result<()> {
        // SAFETY: `ctx` is retained for the seam's lifetime.
        unsafe { drv::ctx::set_current(self.ctx.ctx) }.map_err(drv_err("cuCtxSetCurrent"))
    }

    /// Waits for the stream (the context is bound).
    fn wait(&self, what: &str) -> Result<()> {
        if self.capturing.load(Ordering::Relaxed) {
            return Err(Error::Device(format!(
                "{what}: the stream is capturing a graph"
            )));
        }
        self.traffic.sync();
        // SAFETY: the seam's live stream.
        unsafe { drv::stream::synchronize(self.stream.0) }.map_err(drv_err(what))
    }

    /// Makes `buf` hold `bytes`, waiting for the stream first when it must
    /// be replaced (a copy may still use the old one).
    fn ensure_pinned(&self, buf: &mut Pinned, bytes: usize) -> Result<()> {
        if buf.len() < bytes {
            self.bind()?;
            self.wait("synchronize (growing a pinned buffer)")?;
            buf.grow(bytes)?;
        }
        Ok(())
    }

    /// Shapes with a cuBLASLt plan so far (tests: one heuristic per shape).
    #[doc(hidden)]
    pub fn gemm_plans(&self) -> usize {
        self.lt.lock().unwrap_or_else(|p| p.into_inner()).planned()
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
        // SAFETY: `p` points to `bytes` bytes just allocated. On the stream,
        // so the zeros land before anything issued after.
        unsafe { drv::memset_d8_async(p, 0, bytes, self.stream.0) }
            .map_err(drv_err("cuMemsetD8Async"))?;
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
        self.traffic.upload(src.len());
        // SAFETY: callers pass a `dst` allocated with at least `src.len()`
        // bytes; `src` stays borrowed until the wait below has seen the copy done.
        unsafe { drv::memcpy_htod_async(dst, src, self.stream.0) }
            .map_err(drv_err("cuMemcpyHtoDAsync"))?;
        self.wait("synchronize (upload)")
    }

    fn download(&self, src: DevPtr, dst: &mut [u8]) -> Result<()> {
        self.bind()?;
        self.traffic.download(dst.len());
        // SAFETY: callers pass a `src` holding at least `dst.len()` bytes;
        // `dst` stays borrowed until the wait below.
        unsafe { drv::memcpy_dtoh_async(dst, src, self.stream.0) }
            .map_err(drv_err("cuMemcpyDtoHAsync"))?;
        self.wait("synchronize (download)")
    }

    fn upload_async(&self, dst: DevPtr, src: &[u8]) -> Result<()> {
        self.bind()?;
        let mut staging = self.staging.lock().unwrap_or_else(|p| p.into_inner());
        self.ensure_pinned(&mut staging, src.len())?;
        // The previous forward's upload has finished: every forward waits
        // for its stream before it returns. (One that failed before its wait
        // may leave its copy in flight: the write below can then garble only
        // that copy, and ours is ordered after it on the stream.)
        let pinned = staging.slice(0, src.len())?;
        pinned.copy_from_slice(src);
        self.traffic.upload(src.len());
        // SAFETY: `dst` holds at least `src.len()` bytes (the workspace's
        // staging region, sized by its layout); `pinned` is page-locked and
        // is not written again before the stream has been waited for.
        unsafe { drv::memcpy_htod_async(dst, pinned, self.stream.0) }
            .map_err(drv_err("cuMemcpyHtoDAsync (staging)"))
    }

    fn reserve_readback(&self, bytes: usize) -> Result<()> {
        let mut rb = self.readback.lock().unwrap_or_else(|p| p.into_inner());
        self.ensure_pinned(&mut rb, bytes)
    }

    fn download_async(&self, src: DevPtr, offset: usize, bytes: usize) -> Result<()> {
        self.bind()?;
        let mut rb = self.readback.lock().unwrap_or_else(|p| p.into_inner());
        let dst = rb.slice(offset, bytes)?;
        self.traffic.download(bytes);
        // SAFETY: `src` holds `bytes` bytes (the caller's workspace buffer);
        // `dst` is page-locked, owned by the seam and read only after the
        // caller's wait.
        unsafe { drv::memcpy_dtoh_async(dst, src, self.stream.0) }
            .map_err(drv_err("cuMemcpyDtoHAsync (readback)"))
    }

    fn read_back(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        let mut rb = self.readback.lock().unwrap_or_else(|p| p.into_inner());
        dst.copy_from_slice(rb.slice(offset, dst.len())?);
        Ok(())
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
        unsafe { drv::launch_kernel(f, g.grid, g.block, g.smem_bytes, self.stream.0, &mut args) }
            .map_err(|e| Error::Device(format!("launching {}: {e:?}", P::NAME)))?;
        if self.sync_check && !self.capturing.load(Ordering::Relaxed) {
            self.wait(&format!("{} failed", P::NAME))?;
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
        if self.sync_check && !self.capturing.load(Ordering::Relaxed) {
            self.wait("cublasGemmEx failed")?;
        }
        Ok(())
    }

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
    ) -> Result<()> {
        if m == 0 || n == 0 {
            return Ok(());
        }
        self.bind()?;
        let mut lt = self.lt.lock().unwrap_or_else(|p| p.into_inner());
        // The seam's stream, as every launch here (a capture records it).
        lt.gemm_bias(self.stream.0, x, w, bias, y, m, n, k, epilogue)?;
        drop(lt);
        if self.sync_check {
            self.synchronize()?;
        }
        Ok(())
    }

    fn l2_persist(&self, window: Option<(DevPtr, usize)>) -> Result<String> {
        self.bind()?;
        lt::l2_persist(self.ctx.dev, self.stream.0, window)
    }

    fn synchronize(&self) -> Result<()> {
        self.bind()?;
        self.wait("synchronize")
    }

    fn traffic(&self) -> Traffic {
        self.traffic.get()
    }

    fn supports_graphs(&self) -> bool {
        true
    }

    fn begin_capture(&self) -> Result<()> {
        self.bind()?;
        // Thread-local mode: only this thread's unsafe calls (a legacy-stream
        // copy, a cuMemAlloc) would break the capture, and none are made.
        // SAFETY: the seam's live stream.
        unsafe {
            drv::stream::begin_capture(
                self.stream.0,
                drv_sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL,
            )
        }
        .map_err(drv_err("cuStreamBeginCapture"))?;
        self.capturing.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn end_capture(&self) -> Result<GraphId> {
        self.bind()?;
        self.capturing.store(false, Ordering::Relaxed);
        let graph = Graph::end_capture(self.stream.0)?;
        let mut graphs = self.graphs.lock().unwrap_or_else(|p| p.into_inner());
        graphs.push(Some(graph));
        Ok(GraphId(graphs.len() - 1))
    }

    fn replay(&self, graph: GraphId) -> Result<()> {
        self.bind()?;
        let graphs = self.graphs.lock().unwrap_or_else(|p| p.into_inner());
        let Some(Some(g)) = graphs.get(graph.0) else {
            return Err(Error::Device(format!("no CUDA graph {graph:?}")));
        };
        // SAFETY: a live instance of this context's graph; the stream is ours.
        unsafe { drv::graph::launch(g.exec, self.stream.0) }.map_err(drv_err("cuGraphLaunch"))
    }

    fn destroy_graph(&self, graph: GraphId) -> Result<()> {
        self.bind()?;
        let mut graphs = self.graphs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(g) = graphs.get_mut(graph.0) {
            *g = None;
        }
        Ok(())
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
        // SAFETY: the seam's live stream: nothing may still use what is freed.
        let _ = unsafe { drv::stream::synchronize(self.stream.0) };
        self.graphs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        for p in self.allocations.lock().unwrap().drain() {
            // SAFETY: each pointer came from `alloc` and is freed once.
            let _ = unsafe { drv::free_sync(p) };
        }
        // The cuBLAS handle, the module and the context go with their fields.
    }
}

//! The launch seam under emulation: "device" memory in host RAM, the
//! kernels run by the SIMT emulation, launch lists recorded and replayed as
//! CUDA graphs are.

use super::{launch, Kernel};
use crate::backend::fp16::{
    check_geometry, DevPtr, Epilogue, GraphId, Launch, Seam, Traffic, TrafficCounter,
};
use crate::backend::kernels::Geometry;
use crate::config::Activation;
use crate::{Error, Result};
use half::f16;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// One recorded launch or GEMM, with its params and pointers.
type Op = Box<dyn Fn(&EmuSeam) -> Result<()> + Send + Sync>;

/// "Device" memory in host RAM: the fp16 forward pass, its params structs and
/// its launch geometry, run through the host-compiled kernels. GEMMs are a
/// plain f32-accumulating loop over fp16 inputs, standing in for cuBLAS.
#[derive(Default)]
pub struct EmuSeam {
    /// Start address -> the allocation (u128 words: 16-byte alignment, which
    /// cp.async's 16-byte copies need, as cudaMalloc's 256 gives on the GPU).
    allocations: Mutex<BTreeMap<u64, Box<[u128]>>>,
    /// A pretend device size, to exercise out-of-memory handling.
    limit: Option<usize>,
    traffic: TrafficCounter,
    /// The "pinned" readback buffer.
    readback: Mutex<Vec<u8>>,
    /// While capturing: the launches so far, not run.
    capture: Mutex<Option<Vec<Op>>>,
    /// Recorded lists by GraphId (None once destroyed).
    graphs: Mutex<Vec<Option<Arc<Vec<Op>>>>>,
}

impl EmuSeam {
    pub fn new() -> Self {
        Self::default()
    }

    /// A seam whose "device" holds at most `bytes`.
    pub fn with_memory_limit(bytes: usize) -> Self {
        EmuSeam {
            limit: Some(bytes),
            ..Self::default()
        }
    }

    fn used(&self) -> usize {
        self.allocations
            .lock()
            .unwrap()
            .values()
            .map(|b| b.len() * 16)
            .sum()
    }

    /// Runs `op` now, or records it while capturing.
    fn run_or_record(&self, op: Op) -> Result<()> {
        if let Some(list) = self.capture.lock().unwrap().as_mut() {
            list.push(op);
            return Ok(());
        }
        op(self)
    }

    /// Copies are not part of a recorded list.
    fn not_capturing(&self, what: &str) -> Result<()> {
        if self.capture.lock().unwrap().is_some() {
            return Err(Error::Device(format!(
                "emulated {what} while capturing a graph"
            )));
        }
        Ok(())
    }

    /// Checks that `[ptr, ptr + len)` lies inside one live allocation.
    fn check_range(&self, ptr: DevPtr, len: usize, what: &str) -> Result<()> {
        let map = self.allocations.lock().unwrap();
        let ok = map
            .range(..=ptr)
            .next_back()
            .is_some_and(|(&start, buf)| ptr + len as u64 <= start + (buf.len() * 16) as u64);
        if ok {
            Ok(())
        } else {
            Err(Error::Device(format!(
                "emulated {what}: {len} bytes at {ptr:#x} outside any allocation"
            )))
        }
    }
}

impl Seam for EmuSeam {
    fn alloc(&self, bytes: usize) -> Result<DevPtr> {
        if let Some(limit) = self.limit {
            let used = self.used();
            if used + bytes > limit {
                return Err(Error::Device(format!(
                    "emulated device: cannot allocate {bytes} bytes ({} of {limit} free)",
                    limit - used
                )));
            }
        }
        let buf = vec![0u128; bytes.div_ceil(16).max(1)].into_boxed_slice();
        let p = buf.as_ptr() as u64;
        self.allocations.lock().unwrap().insert(p, buf);
        Ok(p)
    }

    fn free(&self, ptr: DevPtr) -> Result<()> {
        self.allocations.lock().unwrap().remove(&ptr);
        Ok(())
    }

    fn upload(&self, dst: DevPtr, src: &[u8]) -> Result<()> {
        self.not_capturing("upload")?;
        self.check_range(dst, src.len(), "upload")?;
        self.traffic.upload(src.len());
        // SAFETY: check_range proved dst..dst+len lies in a live allocation of
        // ours, which `src` (a caller's slice) cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst as *mut u8, src.len()) };
        Ok(())
    }

    fn download(&self, src: DevPtr, dst: &mut [u8]) -> Result<()> {
        self.not_capturing("download")?;
        self.check_range(src, dst.len(), "download")?;
        self.traffic.download(dst.len());
        // A synchronous copy waits for the stream, as cuMemcpyDtoH does.
        self.traffic.sync();
        // SAFETY: as in upload, with the roles swapped.
        unsafe { std::ptr::copy_nonoverlapping(src as *const u8, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    /// The emulated stream runs everything at once: the copy is immediate.
    fn upload_async(&self, dst: DevPtr, src: &[u8]) -> Result<()> {
        self.upload(dst, src)
    }

    fn reserve_readback(&self, bytes: usize) -> Result<()> {
        let mut rb = self.readback.lock().unwrap();
        if rb.len() < bytes {
            rb.resize(bytes, 0);
        }
        Ok(())
    }

    fn download_async(&self, src: DevPtr, offset: usize, bytes: usize) -> Result<()> {
        self.not_capturing("download")?;
        self.check_range(src, bytes, "download")?;
        let mut rb = self.readback.lock().unwrap();
        let Some(dst) = rb.get_mut(offset..offset + bytes) else {
            return Err(Error::Internal(format!(
                "readback of {bytes} bytes at {offset} past the reserved {}",
                rb.len()
            )));
        };
        self.traffic.download(bytes);
        // SAFETY: check_range proved src..src+bytes lies in a live
        // allocation, which the seam's own readback Vec cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping(src as *const u8, dst.as_mut_ptr(), bytes) };
        Ok(())
    }

    fn read_back(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        let rb = self.readback.lock().unwrap();
        let src = rb.get(offset..offset + dst.len()).ok_or_else(|| {
            Error::Internal(format!("read_back past the reserved {} bytes", rb.len()))
        })?;
        dst.copy_from_slice(src);
        Ok(())
    }

    fn launch<P: Launch>(&self, params: P, geometry: Geometry) -> Result<()> {
        check_geometry(P::NAME, &geometry)?;
        self.run_or_record(Box::new(move |_| {
            launch(
                Kernel {
                    name: P::NAME,
                    func: P::HOST,
                    params,
                },
                geometry,
            )
        }))
    }

    fn gemm(&self, x: DevPtr, w: DevPtr, y: DevPtr, m: usize, n: usize, k: usize) -> Result<()> {
        // Checked when issued, and again when a recorded list runs.
        self.check_gemm(x, w, y, m, n, k)?;
        self.run_or_record(Box::new(move |seam| {
            seam.gemm_now(x, w, 0, y, m, n, k, None)
        }))
    }

    /// As cuBLASLt's BIAS / GELU_BIAS epilogues: the bias added to the fp32
    /// product, the activation in fp32, one rounding to fp16 at the end.
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
        self.check_gemm(x, w, y, m, n, k)?;
        if bias != 0 {
            self.check_range(bias, n * 2, "gemm_bias bias")?;
        }
        self.run_or_record(Box::new(move |seam| {
            seam.gemm_now(x, w, bias, y, m, n, k, Some(epilogue))
        }))
    }

    fn synchronize(&self) -> Result<()> {
        self.not_capturing("synchronize")?;
        self.traffic.sync();
        Ok(())
    }

    fn traffic(&self) -> Traffic {
        self.traffic.get()
    }

    fn supports_graphs(&self) -> bool {
        true
    }

    fn begin_capture(&self) -> Result<()> {
        let mut c = self.capture.lock().unwrap();
        if c.is_some() {
            return Err(Error::Device("emulated capture: already capturing".into()));
        }
        *c = Some(Vec::new());
        Ok(())
    }

    fn end_capture(&self) -> Result<GraphId> {
        let list = self
            .capture
            .lock()
            .unwrap()
            .take()
            .ok_or_else(|| Error::Device("emulated end_capture: not capturing".into()))?;
        let mut graphs = self.graphs.lock().unwrap();
        graphs.push(Some(Arc::new(list)));
        Ok(GraphId(graphs.len() - 1))
    }

    fn replay(&self, graph: GraphId) -> Result<()> {
        self.not_capturing("replay")?;
        let list = self
            .graphs
            .lock()
            .unwrap()
            .get(graph.0)
            .cloned()
            .flatten()
            .ok_or_else(|| Error::Device(format!("emulated replay: no graph {graph:?}")))?;
        list.iter().try_for_each(|op| op(self))
    }

    fn destroy_graph(&self, graph: GraphId) -> Result<()> {
        if let Some(g) = self.graphs.lock().unwrap().get_mut(graph.0) {
            *g = None;
        }
        Ok(())
    }

    fn describe(&self) -> String {
        "emulated CUDA on the CPU (fp16)".into()
    }

    fn free_memory(&self) -> Option<usize> {
        self.limit.map(|l| l.saturating_sub(self.used()))
    }
}

impl EmuSeam {
    fn check_gemm(
        &self,
        x: DevPtr,
        w: DevPtr,
        y: DevPtr,
        m: usize,
        n: usize,
        k: usize,
    ) -> Result<()> {
        self.check_range(x, m * k * 2, "gemm x")?;
        self.check_range(w, n * k * 2, "gemm w")?;
        self.check_range(y, m * n * 2, "gemm y")?;
        let overlaps = |a: DevPtr, a_len: usize, b: DevPtr, b_len: usize| {
            a < b + b_len as u64 && b < a + a_len as u64
        };
        if overlaps(y, m * n * 2, x, m * k * 2) || overlaps(y, m * n * 2, w, n * k * 2) {
            return Err(Error::Device(format!(
                "emulated gemm: output {y:#x} ({m}x{n}) overlaps an input"
            )));
        }
        Ok(())
    }

    /// y = epilogue(x w^T + bias) in f32 over fp16 inputs, rounded to fp16
    /// once; `bias` 0 is none, `epilogue` None a plain GEMM.
    #[allow(clippy::too_many_arguments)]
    fn gemm_now(
        &self,
        x: DevPtr,
        w: DevPtr,
        bias: DevPtr,
        y: DevPtr,
        m: usize,
        n: usize,
        k: usize,
        epilogue: Option<Epilogue>,
    ) -> Result<()> {
        self.check_gemm(x, w, y, m, n, k)?;
        if bias != 0 {
            self.check_range(bias, n * 2, "gemm_bias bias")?;
        }
        // SAFETY: the three ranges (and the bias's n halves) lie in live
        // allocations (checked above) and y overlaps neither x nor w
        // (checked above), so the &mut slice is unique.
        let (xs, ws, ys) = unsafe {
            (
                std::slice::from_raw_parts(x as *const f16, m * k),
                std::slice::from_raw_parts(w as *const f16, n * k),
                std::slice::from_raw_parts_mut(y as *mut f16, m * n),
            )
        };
        let xf: Vec<f32> = xs.iter().map(|v| v.to_f32()).collect();
        let wf: Vec<f32> = ws.iter().map(|v| v.to_f32()).collect();
        let mut yf = vec![0f32; m * n];
        crate::backend::cpu::ops::linear(&xf, &wf, None, k, &mut yf);
        if bias != 0 {
            // SAFETY: n halves at `bias` in a live allocation (checked above).
            let b = unsafe { std::slice::from_raw_parts(bias as *const f16, n) };
            for row in yf.chunks_mut(n.max(1)) {
                for (v, b) in row.iter_mut().zip(b) {
                    *v += b.to_f32();
                }
            }
        }
        if epilogue == Some(Epilogue::BiasGeluTanh) {
            for v in &mut yf {
                *v = crate::backend::cpu::ops::act(*v, Activation::GeluTanh);
            }
        }
        for (o, v) in ys.iter_mut().zip(yf) {
            *o = f16::from_f32(v);
        }
        Ok(())
    }
}

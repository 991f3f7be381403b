//! The CUDA seam's stream-side resources, each released when dropped: the
//! engine's one non-blocking stream, pinned host buffers for the staging
//! upload and the readbacks, and instantiated graphs.

use super::drv_err;
use crate::error::{Error, Result};
use cudarc::driver::{result as drv, sys as drv_sys};
use std::ffi::c_void;

/// A non-blocking stream (no implicit ordering with the legacy default
/// stream), destroyed when dropped.
pub(super) struct Stream(pub(super) drv_sys::CUstream);

impl Stream {
    /// In the bound context.
    pub(super) fn new() -> Result<Stream> {
        drv::stream::create(drv::stream::StreamKind::NonBlocking)
            .map(Stream)
            .map_err(drv_err("cuStreamCreate"))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // SAFETY: created by cuStreamCreate, destroyed once, here.
        let _ = unsafe { drv::stream::destroy(self.0) };
    }
}

/// Page-locked host memory (cuMemHostAlloc), so copies to and from it are
/// truly asynchronous. Freed when dropped (the context must be alive).
pub(super) struct Pinned {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: plain host memory owned by this value; the seam guards each Pinned
// with a Mutex.
unsafe impl Send for Pinned {}

impl Pinned {
    pub(super) const fn empty() -> Pinned {
        Pinned {
            ptr: std::ptr::null_mut(),
            len: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Replaces the buffer by one of at least `bytes` (contents lost). The
    /// caller has waited for every copy that used the old one.
    pub(super) fn grow(&mut self, bytes: usize) -> Result<()> {
        let bytes = bytes.next_power_of_two().max(4096);
        // SAFETY: plain page-locked allocation in the bound context.
        let p = unsafe { drv::malloc_host(bytes, drv_sys::CU_MEMHOSTALLOC_PORTABLE) }
            .map_err(|e| Error::Device(format!("cuMemHostAlloc of {} KiB: {e:?}", bytes >> 10)))?;
        *self = Pinned {
            ptr: p as *mut u8,
            len: bytes,
        };
        Ok(())
    }

    pub(super) fn slice(&mut self, offset: usize, bytes: usize) -> Result<&mut [u8]> {
        if offset + bytes > self.len {
            return Err(Error::Internal(format!(
                "pinned buffer: {bytes} bytes at {offset} past its {}",
                self.len
            )));
        }
        if bytes == 0 {
            return Ok(&mut []);
        }
        // SAFETY: [offset, offset + bytes) lies in our allocation (checked
        // above), and `&mut self` makes the slice unique.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.ptr.add(offset), bytes) })
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: from cuMemHostAlloc, freed once, here.
            let _ = unsafe { drv::free_host(self.ptr as *mut c_void) };
        }
    }
}

/// A captured graph and its executable instance, destroyed when dropped.
pub(super) struct Graph {
    graph: drv_sys::CUgraph,
    pub(super) exec: drv_sys::CUgraphExec,
}

// SAFETY: graph handles may be launched from any thread with the context
// bound; the seam keeps them behind a Mutex.
unsafe impl Send for Graph {}

impl Graph {
    /// Ends the capture on `stream` and instantiates what it recorded.
    pub(super) fn end_capture(stream: drv_sys::CUstream) -> Result<Graph> {
        // SAFETY: `stream` is the seam's live stream, capturing.
        let graph =
            unsafe { drv::stream::end_capture(stream) }.map_err(drv_err("cuStreamEndCapture"))?;
        // SAFETY: `graph` was just captured; destroyed on failure below.
        let exec =
            unsafe { drv::graph::instantiate(graph, drv_sys::CUgraphInstantiate_flags_enum(0)) };
        match exec {
            Ok(exec) => Ok(Graph { graph, exec }),
            Err(e) => {
                // SAFETY: captured above, not instantiated, destroyed once.
                let _ = unsafe { drv::graph::destroy(graph) };
                Err(Error::Device(format!("cuGraphInstantiate: {e:?}")))
            }
        }
    }
}

impl Drop for Graph {
    fn drop(&mut self) {
        // SAFETY: both created in end_capture, destroyed once, here.
        unsafe {
            let _ = drv::graph::exec_destroy(self.exec);
            let _ = drv::graph::destroy(self.graph);
        }
    }
}

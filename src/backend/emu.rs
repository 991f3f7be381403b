//! The kernels of `kernels/*.cu`, compiled for the host by build.rs and run on
//! the CPU under the SIMT emulation (`kernels/simt_emu.h`): every CUDA thread a
//! fiber, `__syncthreads` a real barrier, shuffles warp-wide rendezvous.
//!
//! This is for tests: it checks the CUDA source itself (indexing, barriers,
//! reductions, fp16 rounding) against the f32 CPU reference on machines with
//! no GPU. It is slow (a few million scalar ops per second).
//!
//! Each `pub fn` takes host slices, asserts every size the kernel relies on,
//! builds the same params struct and [`Geometry`] the CUDA launcher uses, and
//! runs the grid. This module holds all of the emulation's `unsafe`.

use std::ffi::c_void;

use half::f16;

use super::kernels::{self as k, Geometry};
use crate::config::Activation;
use crate::{Error, Result};

extern "C" {
    fn bertrt_emu_launch(
        gx: u32,
        gy: u32,
        gz: u32,
        bx: u32,
        by: u32,
        bz: u32,
        dyn_smem: usize,
        entry: extern "C" fn(*mut c_void),
        ctx: *mut c_void,
    ) -> i32;
    fn bertrt_emu_last_error(buf: *mut u8, len: usize) -> usize;

    pub(crate) fn bertrt_emu_embeddings_layernorm_f16(p: k::EmbeddingsLayerNormParams);
    pub(crate) fn bertrt_emu_add_bias_residual_layernorm_f16(p: k::AddBiasResidualLayerNormParams);
    pub(crate) fn bertrt_emu_bias_act_f16(p: k::BiasActParams);
    pub(crate) fn bertrt_emu_attention_f16(p: k::AttentionParams);
    pub(crate) fn bertrt_emu_gather_rows_f16(p: k::GatherRowsParams);
    pub(crate) fn bertrt_emu_cast_f32_f16(p: k::CastF32Params);
    pub(crate) fn bertrt_emu_pool_normalize_f16(p: k::PoolNormalizeParams);
    pub(crate) fn bertrt_emu_attention_tc_d32_f16(p: k::AttentionTcParams<32>);
    pub(crate) fn bertrt_emu_attention_tc_d64_f16(p: k::AttentionTcParams<64>);
    pub(crate) fn bertrt_emu_attention_tc_d128_f16(p: k::AttentionTcParams<128>);
    pub(crate) fn bertrt_emu_mma_selftest_f16(p: k::MmaSelftestParams);
    pub(crate) fn bertrt_emu_ldmatrix_selftest_f16(p: k::LdmatrixSelftestParams);
    pub(crate) fn bertrt_emu_cp_async_selftest_f16(p: k::CpAsyncSelftestParams);
}

mod tc;
pub use tc::*;

/// What the per-thread entry needs: which kernel, with which params.
struct Kernel<P: Copy> {
    name: &'static str,
    func: unsafe extern "C" fn(P),
    params: P,
}

/// Called by the emulator once per CUDA thread, with that thread's builtins set.
extern "C" fn entry<P: Copy>(ctx: *mut c_void) {
    // SAFETY: `ctx` is the `&Kernel<P>` that `launch` passed with this very
    // `entry::<P>`, alive until bertrt_emu_launch returns.
    let kernel = unsafe { &*(ctx as *const Kernel<P>) };
    // SAFETY: the params' pointers cover every element the kernel reads or
    // writes: the emu::* wrappers assert it from their slices; through
    // EmuSeam::launch it is the caller's sizing (Fp16Model's workspace), which
    // this module does not re-check (see Seam::launch).
    unsafe { (kernel.func)(kernel.params) }
}

/// Runs one grid. Callers have asserted the buffers behind `kernel.params`.
fn launch<P: Copy>(kernel: Kernel<P>, g: Geometry) -> Result<()> {
    if g.grid.0 == 0 || g.grid.1 == 0 || g.grid.2 == 0 {
        return Ok(()); // nothing to do, as on the GPU where a 0-block launch is an error we avoid
    }
    let ctx = &kernel as *const Kernel<P> as *mut c_void;
    // SAFETY: `ctx` outlives the call (the emulator joins every block before
    // returning) and is only read, by `entry::<P>`.
    let rc = unsafe {
        bertrt_emu_launch(
            g.grid.0,
            g.grid.1,
            g.grid.2,
            g.block.0,
            g.block.1,
            g.block.2,
            g.smem_bytes as usize,
            entry::<P>,
            ctx,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let mut buf = vec![0u8; 1024];
    // SAFETY: `buf` is writable for `buf.len()` bytes; the emulator writes at
    // most that many, NUL included.
    let n = unsafe { bertrt_emu_last_error(buf.as_mut_ptr(), buf.len()) };
    buf.truncate(n.min(buf.len() - 1));
    Err(Error::Device(format!(
        "emulated {}: {}",
        kernel.name,
        String::from_utf8_lossy(&buf)
    )))
}

fn ptr<T>(s: &[T]) -> u64 {
    s.as_ptr() as u64
}
fn ptr_mut<T>(s: &mut [T]) -> u64 {
    s.as_mut_ptr() as u64
}

/// out[t] = LN(word[ids[t]] + pos[pos_ids[t]] (+ ty[type_ids[t]])) * gamma + beta.
/// Tables `[rows, width]` with `width = gamma.len()`. An id out of range is an
/// `Err` (the kernel traps).
#[allow(clippy::too_many_arguments)]
pub fn embeddings_layernorm(
    word: &[f16],
    pos: &[f16],
    ty: Option<&[f16]>,
    ids: &[u32],
    pos_ids: &[u32],
    type_ids: &[u32],
    gamma: &[f16],
    beta: &[f16],
    eps: f32,
    out: &mut [f16],
) -> Result<()> {
    let width = gamma.len();
    let tokens = ids.len();
    assert!(width > 0 && beta.len() == width);
    assert!(word.len().is_multiple_of(width) && pos.len().is_multiple_of(width));
    assert!(pos_ids.len() == tokens && out.len() == tokens * width);
    if let Some(ty) = ty {
        assert!(ty.len() % width == 0 && type_ids.len() == tokens);
    }
    let p = k::EmbeddingsLayerNormParams {
        word: ptr(word),
        pos: ptr(pos),
        ty: ty.map_or(0, ptr),
        ids: ptr(ids),
        pos_ids: ptr(pos_ids),
        type_ids: ptr(type_ids),
        gamma: ptr(gamma),
        beta: ptr(beta),
        out: ptr_mut(out),
        tokens: tokens as i32,
        width: width as i32,
        vocab: (word.len() / width) as u32,
        max_pos: (pos.len() / width) as u32,
        type_vocab: ty.map_or(0, |t| (t.len() / width) as u32),
        eps,
    };
    let g = k::embeddings_layernorm_geometry(tokens, width);
    launch(
        Kernel {
            name: "embeddings_layernorm_f16",
            func: bertrt_emu_embeddings_layernorm_f16,
            params: p,
        },
        g,
    )
}

/// In place: x = LN(x + bias + residual) * gamma + beta, row width `bias.len()`.
pub fn add_bias_residual_layernorm(
    x: &mut [f16],
    bias: &[f16],
    residual: &[f16],
    gamma: &[f16],
    beta: &[f16],
    eps: f32,
) -> Result<()> {
    let width = bias.len();
    assert!(width > 0 && gamma.len() == width && beta.len() == width);
    assert!(x.len().is_multiple_of(width) && residual.len() == x.len());
    let rows = x.len() / width;
    let xp = ptr_mut(x);
    let p = k::AddBiasResidualLayerNormParams {
        x: xp,
        bias: ptr(bias),
        residual: ptr(residual),
        gamma: ptr(gamma),
        beta: ptr(beta),
        out: xp,
        rows: rows as i32,
        width: width as i32,
        eps,
    };
    let g = k::add_bias_residual_layernorm_geometry(rows, width);
    launch(
        Kernel {
            name: "add_bias_residual_layernorm_f16",
            func: bertrt_emu_add_bias_residual_layernorm_f16,
            params: p,
        },
        g,
    )
}

/// In place: x = act(x + bias), row width `bias.len()`; `act` None adds the
/// bias only.
pub fn bias_act(x: &mut [f16], bias: &[f16], act: Option<Activation>) -> Result<()> {
    let width = bias.len();
    assert!(width > 0 && x.len().is_multiple_of(width));
    let p = k::BiasActParams {
        x: ptr_mut(x),
        bias: ptr(bias),
        n: x.len() as i64,
        width: width as i32,
        act: k::ActCode::of(act),
    };
    let g = k::elementwise_geometry(x.len());
    launch(
        Kernel {
            name: "bias_act_f16",
            func: bertrt_emu_bias_act_f16,
            params: p,
        },
        g,
    )
}

/// Packed multi-head self-attention: `qkv` `[T, 3*heads*head_dim]` rows
/// `q | k | v`, `cu_seqlens` `[num_seqs + 1]` from 0 to T, `out` `[T, heads*head_dim]`.
pub fn attention(
    qkv: &[f16],
    cu_seqlens: &[i32],
    heads: usize,
    head_dim: usize,
    out: &mut [f16],
) -> Result<()> {
    assert!((1..=k::ATTN_MAX_HEAD_DIM).contains(&head_dim) && heads > 0);
    assert!(!cu_seqlens.is_empty() && cu_seqlens[0] == 0);
    assert!(
        cu_seqlens.windows(2).all(|w| w[0] <= w[1]),
        "cu_seqlens must not decrease"
    );
    let tokens = *cu_seqlens.last().unwrap() as usize;
    let h = heads * head_dim;
    assert!(qkv.len() == tokens * 3 * h && out.len() == tokens * h);
    let num_seqs = cu_seqlens.len() - 1;
    let max_len = cu_seqlens
        .windows(2)
        .map(|w| (w[1] - w[0]) as usize)
        .max()
        .unwrap_or(0);
    let p = k::AttentionParams {
        qkv: ptr(qkv),
        cu_seqlens: ptr(cu_seqlens),
        out: ptr_mut(out),
        num_seqs: num_seqs as i32,
        heads: heads as i32,
        head_dim: head_dim as i32,
        ld: k::attention_smem_ld(head_dim) as i32,
        scale: 1.0 / (head_dim as f32).sqrt(),
        _pad: 0,
    };
    if num_seqs == 0 || max_len == 0 {
        return Ok(());
    }
    let g = k::attention_geometry(num_seqs, heads, head_dim, max_len);
    launch(
        Kernel {
            name: "attention_f16",
            func: bertrt_emu_attention_f16,
            params: p,
        },
        g,
    )
}

/// out[i] = x[row_ids[i]], rows of width `width`. A row id out of range is an
/// `Err` (the kernel traps).
pub fn gather_rows(x: &[f16], width: usize, row_ids: &[i32], out: &mut [f16]) -> Result<()> {
    assert!(width > 0 && x.len().is_multiple_of(width) && out.len() == row_ids.len() * width);
    let p = k::GatherRowsParams {
        x: ptr(x),
        row_ids: ptr(row_ids),
        out: ptr_mut(out),
        n: row_ids.len() as i32,
        rows: (x.len() / width) as i32,
        width: width as i32,
        _pad: 0,
    };
    let g = k::gather_rows_geometry(row_ids.len());
    launch(
        Kernel {
            name: "gather_rows_f16",
            func: bertrt_emu_gather_rows_f16,
            params: p,
        },
        g,
    )
}

/// out = x as f32.
pub fn cast_f32(x: &[f16], out: &mut [f32]) -> Result<()> {
    assert!(out.len() == x.len());
    let p = k::CastF32Params {
        x: ptr(x),
        out: ptr_mut(out),
        n: x.len() as i64,
    };
    launch(
        Kernel {
            name: "cast_f32_f16",
            func: bertrt_emu_cast_f32_f16,
            params: p,
        },
        k::elementwise_geometry(x.len()),
    )
}

/// `out[i]` = the pooled row `i` of `x` (rows of width `width`; segment
/// bounds `cu` for First/Mean, `out.len() / width` rows for Each), divided by
/// max(its L2 norm, 1e-12) when `normalize`. A segment outside `x` or empty
/// is an `Err` (the kernel traps).
pub fn pool_normalize(
    x: &[f16],
    width: usize,
    mode: k::PoolMode,
    cu: &[i32],
    normalize: bool,
    out: &mut [f32],
) -> Result<()> {
    assert!(width > 0 && x.len().is_multiple_of(width) && out.len().is_multiple_of(width));
    let n = out.len() / width;
    match mode {
        k::PoolMode::Each => assert!(n <= x.len() / width),
        _ => assert!(cu.len() == n + 1),
    }
    let p = k::PoolNormalizeParams {
        x: ptr(x),
        cu: ptr(cu),
        out: ptr_mut(out),
        n: n as i32,
        rows: (x.len() / width) as i32,
        width: width as i32,
        mode,
        normalize: normalize as i32,
        _pad: 0,
    };
    launch(
        Kernel {
            name: "pool_normalize_f16",
            func: bertrt_emu_pool_normalize_f16,
            params: p,
        },
        k::pool_normalize_geometry(n, width),
    )
}

// ---- the launch seam under emulation -------------------------------------------

use super::fp16::{DevPtr, Launch, Seam};
use std::collections::BTreeMap;
use std::sync::Mutex;

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
    /// Bytes copied device -> host so far.
    downloaded: std::sync::Arc<std::sync::atomic::AtomicUsize>,
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

    /// The count of bytes copied device -> host, shared: a test keeps it
    /// while the seam moves into a model.
    pub fn download_counter(&self) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
        self.downloaded.clone()
    }

    fn used(&self) -> usize {
        self.allocations
            .lock()
            .unwrap()
            .values()
            .map(|b| b.len() * 16)
            .sum()
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
        self.check_range(dst, src.len(), "upload")?;
        // SAFETY: check_range proved dst..dst+len lies in a live allocation of
        // ours, which `src` (a caller's slice) cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst as *mut u8, src.len()) };
        Ok(())
    }

    fn download(&self, src: DevPtr, dst: &mut [u8]) -> Result<()> {
        self.check_range(src, dst.len(), "download")?;
        self.downloaded
            .fetch_add(dst.len(), std::sync::atomic::Ordering::Relaxed);
        // SAFETY: as in upload, with the roles swapped.
        unsafe { std::ptr::copy_nonoverlapping(src as *const u8, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    fn launch<P: Launch>(&self, params: P, geometry: Geometry) -> Result<()> {
        super::fp16::check_geometry(P::NAME, &geometry)?;
        launch(
            Kernel {
                name: P::NAME,
                func: P::HOST,
                params,
            },
            geometry,
        )
    }

    fn gemm(&self, x: DevPtr, w: DevPtr, y: DevPtr, m: usize, n: usize, k: usize) -> Result<()> {
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
        // SAFETY: the three ranges lie in live allocations (checked above) and
        // y overlaps neither x nor w (checked above), so the &mut slice is unique.
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
        for (o, v) in ys.iter_mut().zip(yf) {
            *o = f16::from_f32(v);
        }
        Ok(())
    }

    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    fn describe(&self) -> String {
        "emulated CUDA on the CPU (fp16)".into()
    }

    fn free_memory(&self) -> Option<usize> {
        self.limit.map(|l| l.saturating_sub(self.used()))
    }
}

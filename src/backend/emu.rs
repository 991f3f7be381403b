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

mod rowwise;
mod seam;
mod tc;
use rowwise::Placed;
pub use rowwise::*;
pub use seam::EmuSeam;
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
    let mut m = Placed::new(0);
    let out_p = m.put(out);
    let p = k::GatherRowsParams {
        x: m.put(x),
        row_ids: ptr(row_ids),
        out: out_p,
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
    )?;
    m.get(out_p, out);
    Ok(())
}

/// out = x as f32.
pub fn cast_f32(x: &[f16], out: &mut [f32]) -> Result<()> {
    assert!(out.len() == x.len());
    let mut m = Placed::new(0);
    let out_p = m.put(out);
    let p = k::CastF32Params {
        x: m.put(x),
        out: out_p,
        n: x.len() as i64,
    };
    launch(
        Kernel {
            name: "cast_f32_f16",
            func: bertrt_emu_cast_f32_f16,
            params: p,
        },
        k::elementwise_geometry(x.len()),
    )?;
    m.get(out_p, out);
    Ok(())
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

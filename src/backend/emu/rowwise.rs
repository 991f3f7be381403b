//! The memory-bound row kernels (embeddings_layernorm,
//! add_bias_residual_layernorm, bias_act) on host slices, with the buffers
//! placed as the test asks: 16-byte aligned as on the GPU (their 16-byte
//! path), or off by an even number of bytes (their element-by-element path).

use half::f16;

use super::{
    bertrt_emu_add_bias_residual_layernorm_f16, bertrt_emu_bias_act_f16,
    bertrt_emu_embeddings_layernorm_f16, launch, ptr, Kernel,
};
use crate::backend::kernels as k;
use crate::config::Activation;
use crate::Result;

/// Host copies of a kernel's buffers, each starting `offset` bytes past a
/// 16-byte boundary: 0 as cudaMalloc places them, or an even offset below 16.
/// The emulated 16-byte loads trap on a misaligned address, as the GPU faults.
pub(super) struct Placed {
    offset: usize,
    bufs: Vec<Box<[u128]>>,
}

impl Placed {
    pub(super) fn new(offset: usize) -> Placed {
        assert!(offset < 16 && offset.is_multiple_of(2), "offset {offset}");
        Placed {
            offset,
            bufs: Vec::new(),
        }
    }

    /// A copy of `s` at the placement's offset.
    pub(super) fn put<T: Copy>(&mut self, s: &[T]) -> u64 {
        let bytes = std::mem::size_of_val(s);
        let mut buf = vec![0u128; (self.offset + bytes).div_ceil(16).max(1)].into_boxed_slice();
        let dst = buf.as_mut_ptr() as usize + self.offset;
        // SAFETY: `buf` holds offset + bytes bytes, and `s` (a caller's
        // slice) cannot overlap a buffer allocated here.
        unsafe { std::ptr::copy_nonoverlapping(s.as_ptr() as *const u8, dst as *mut u8, bytes) };
        self.bufs.push(buf);
        dst as u64
    }

    /// `out` = the `out.len()` values at `p`, a pointer [`Placed::put`]
    /// returned for a slice at least that long.
    pub(super) fn get<T: Copy>(&self, p: u64, out: &mut [T]) {
        let bytes = std::mem::size_of_val(out);
        assert!(self.bufs.iter().any(|b| {
            let start = b.as_ptr() as u64;
            p >= start && p + bytes as u64 <= start + (b.len() * 16) as u64
        }));
        // SAFETY: checked just above: `p..p + bytes` lies in one of our buffers.
        unsafe {
            std::ptr::copy_nonoverlapping(p as *const u8, out.as_mut_ptr() as *mut u8, bytes)
        };
    }
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
    embeddings_layernorm_placed(
        word, pos, ty, ids, pos_ids, type_ids, gamma, beta, eps, out, 0,
    )
}

/// [`embeddings_layernorm`] with every fp16 buffer `offset` bytes past a
/// 16-byte boundary (see `Placed`).
#[allow(clippy::too_many_arguments)]
pub fn embeddings_layernorm_placed(
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
    offset: usize,
) -> Result<()> {
    let width = gamma.len();
    let tokens = ids.len();
    assert!(width > 0 && beta.len() == width);
    assert!(word.len().is_multiple_of(width) && pos.len().is_multiple_of(width));
    assert!(pos_ids.len() == tokens && out.len() == tokens * width);
    if let Some(ty) = ty {
        assert!(ty.len() % width == 0 && type_ids.len() == tokens);
    }
    let (chunks, g) = k::layernorm_plan(tokens, width);
    let mut m = Placed::new(offset);
    let out_p = m.put(out);
    let p = k::EmbeddingsLayerNormParams {
        word: m.put(word),
        pos: m.put(pos),
        ty: ty.map_or(0, |t| m.put(t)),
        ids: ptr(ids),
        pos_ids: ptr(pos_ids),
        type_ids: ptr(type_ids),
        gamma: m.put(gamma),
        beta: m.put(beta),
        out: out_p,
        tokens: tokens as i32,
        width: width as i32,
        vocab: (word.len() / width) as u32,
        max_pos: (pos.len() / width) as u32,
        type_vocab: ty.map_or(0, |t| (t.len() / width) as u32),
        eps,
        chunks,
        _pad: 0,
    };
    launch(
        Kernel {
            name: "embeddings_layernorm_f16",
            func: bertrt_emu_embeddings_layernorm_f16,
            params: p,
        },
        g,
    )?;
    m.get(out_p, out);
    Ok(())
}

/// In place: x = LN(x + bias + residual) * gamma + beta, row width
/// `gamma.len()`; bias and residual may be absent (null in the kernel).
pub fn add_bias_residual_layernorm(
    x: &mut [f16],
    bias: Option<&[f16]>,
    residual: Option<&[f16]>,
    gamma: &[f16],
    beta: &[f16],
    eps: f32,
) -> Result<()> {
    add_bias_residual_layernorm_placed(x, bias, residual, gamma, beta, eps, 0)
}

/// [`add_bias_residual_layernorm`] with every buffer `offset` bytes past a
/// 16-byte boundary (see `Placed`).
pub fn add_bias_residual_layernorm_placed(
    x: &mut [f16],
    bias: Option<&[f16]>,
    residual: Option<&[f16]>,
    gamma: &[f16],
    beta: &[f16],
    eps: f32,
    offset: usize,
) -> Result<()> {
    let width = gamma.len();
    assert!(width > 0 && beta.len() == width && bias.is_none_or(|b| b.len() == width));
    assert!(x.len().is_multiple_of(width) && residual.is_none_or(|r| r.len() == x.len()));
    let rows = x.len() / width;
    let (chunks, g) = k::layernorm_plan(rows, width);
    let mut m = Placed::new(offset);
    let xp = m.put(x);
    let p = k::AddBiasResidualLayerNormParams {
        x: xp,
        bias: bias.map_or(0, |b| m.put(b)),
        residual: residual.map_or(0, |r| m.put(r)),
        gamma: m.put(gamma),
        beta: m.put(beta),
        out: xp,
        rows: rows as i32,
        width: width as i32,
        eps,
        chunks,
    };
    launch(
        Kernel {
            name: "add_bias_residual_layernorm_f16",
            func: bertrt_emu_add_bias_residual_layernorm_f16,
            params: p,
        },
        g,
    )?;
    m.get(xp, x);
    Ok(())
}

/// In place: x = act(x + bias), row width `bias.len()`; `act` None adds the
/// bias only.
pub fn bias_act(x: &mut [f16], bias: &[f16], act: Option<Activation>) -> Result<()> {
    bias_act_placed(x, bias.len(), Some(bias), act, 0)
}

/// In place on rows of `width`: x = act(x (+ bias)), every buffer `offset`
/// bytes past a 16-byte boundary (see `Placed`).
pub fn bias_act_placed(
    x: &mut [f16],
    width: usize,
    bias: Option<&[f16]>,
    act: Option<Activation>,
    offset: usize,
) -> Result<()> {
    assert!(width > 0 && x.len().is_multiple_of(width) && bias.is_none_or(|b| b.len() == width));
    let rows = x.len() / width;
    let mut m = Placed::new(offset);
    let xp = m.put(x);
    let p = k::BiasActParams {
        x: xp,
        bias: bias.map_or(0, |b| m.put(b)),
        rows: rows as i32,
        width: width as i32,
        act: k::ActCode::of(act),
        _pad: 0,
    };
    launch(
        Kernel {
            name: "bias_act_f16",
            func: bertrt_emu_bias_act_f16,
            params: p,
        },
        k::bias_act_geometry(rows, width),
    )?;
    m.get(xp, x);
    Ok(())
}

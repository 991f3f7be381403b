//! attention_tc.cu under emulation, for host slices. (mma_selftest.cu's
//! kernels run through the seam: tests/common/seam_tensor_cores.rs.)

use half::f16;

use super::{launch, ptr, ptr_mut, Kernel};
use crate::backend::kernels as k;
use crate::Result;

/// 16-byte aligned host memory (cp.async and ldmatrix need it; a `Vec<f16>`
/// only guarantees 2), holding `len` fp16 values.
struct Aligned16 {
    words: Vec<u128>,
    len: usize,
}
impl Aligned16 {
    fn from(v: &[f16]) -> Self {
        let mut a = Aligned16 {
            words: vec![0u128; (v.len() * 2).div_ceil(16)],
            len: v.len(),
        };
        a.halves_mut().copy_from_slice(v);
        a
    }
    fn halves_mut(&mut self) -> &mut [f16] {
        &mut bytemuck::cast_slice_mut::<u128, f16>(&mut self.words)[..self.len]
    }
    fn halves(&self) -> &[f16] {
        &bytemuck::cast_slice::<u128, f16>(&self.words)[..self.len]
    }
}

/// attention_tc.cu: packed multi-head self-attention on tensor cores, the
/// same contract as [`super::attention`]; `head_dim` one of
/// [`k::TC_HEAD_DIMS`].
pub fn attention_tc(
    qkv: &[f16],
    cu_seqlens: &[i32],
    heads: usize,
    head_dim: usize,
    out: &mut [f16],
) -> Result<()> {
    assert!(k::TC_HEAD_DIMS.contains(&head_dim) && heads > 0);
    assert!(!cu_seqlens.is_empty() && cu_seqlens[0] == 0);
    assert!(
        cu_seqlens.windows(2).all(|w| w[0] <= w[1]),
        "cu_seqlens must not decrease"
    );
    let tokens = *cu_seqlens.last().unwrap() as usize;
    let h = heads * head_dim;
    assert!(qkv.len() == tokens * 3 * h && out.len() == tokens * h);
    let cu: Vec<usize> = cu_seqlens.iter().map(|&c| c as usize).collect();
    let tiles = k::attention_tc_tiles(&cu);
    let num_tiles = tiles.len() / 2;
    if num_tiles == 0 {
        return Ok(());
    }
    let qkv_a = Aligned16::from(qkv);
    let mut out_a = Aligned16::from(out);
    let (q, c, t, o) = (
        ptr(qkv_a.halves()),
        ptr(cu_seqlens),
        ptr(&tiles),
        ptr_mut(out_a.halves_mut()),
    );
    let g = k::attention_tc_geometry(num_tiles, heads, head_dim);
    match head_dim {
        32 => launch(
            Kernel {
                name: "attention_tc_d32_f16",
                func: super::bertrt_emu_attention_tc_d32_f16,
                params: k::AttentionTcParams::<32>::new(q, c, t, o, num_tiles, heads),
            },
            g,
        ),
        64 => launch(
            Kernel {
                name: "attention_tc_d64_f16",
                func: super::bertrt_emu_attention_tc_d64_f16,
                params: k::AttentionTcParams::<64>::new(q, c, t, o, num_tiles, heads),
            },
            g,
        ),
        _ => launch(
            Kernel {
                name: "attention_tc_d128_f16",
                func: super::bertrt_emu_attention_tc_d128_f16,
                params: k::AttentionTcParams::<128>::new(q, c, t, o, num_tiles, heads),
            },
            g,
        ),
    }?;
    out.copy_from_slice(out_a.halves());
    Ok(())
}

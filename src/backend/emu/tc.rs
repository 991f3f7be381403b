//! The tensor-core kernels under emulation: attention_tc.cu for host slices,
//! and the one-warp instruction self-tests of mma_selftest.cu.

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

/// mma_selftest.cu: d = a b + c through one emulated mma.sync m16n8k16, with
/// a [16][16] and b [16][8] (k, n) row-major fp16, c [16][8] row-major f32.
pub fn mma_selftest(a: &[f16], b: &[f16], c: &[f32]) -> Result<Vec<f32>> {
    assert!(a.len() == 256 && b.len() == 128 && c.len() == 128);
    let mut d = vec![f32::NAN; 128];
    let p = k::MmaSelftestParams {
        a: ptr(a),
        b: ptr(b),
        c: ptr(c),
        d: ptr_mut(&mut d),
    };
    launch(
        Kernel {
            name: "mma_selftest_f16",
            func: super::bertrt_emu_mma_selftest_f16,
            params: p,
        },
        k::selftest_geometry(0),
    )?;
    Ok(d)
}

/// ldmatrix_selftest.cu's out[variant][lane][register] (6 x 32 x 4 u32).
pub fn ldmatrix_selftest() -> Result<Vec<u32>> {
    let mut out = vec![0xDEAD_BEEFu32; 6 * 32 * 4];
    let p = k::LdmatrixSelftestParams {
        out: ptr_mut(&mut out),
    };
    launch(
        Kernel {
            name: "ldmatrix_selftest_f16",
            func: super::bertrt_emu_ldmatrix_selftest_f16,
            params: p,
        },
        k::selftest_geometry(32 * k::LDM_SELFTEST_LD * 2),
    )?;
    Ok(out)
}

/// cp_async_selftest.cu: `src` [32 lanes][3 chunks][4] u32; returns
/// out[lane][point][chunk] (32 x 5 x 3).
pub fn cp_async_selftest(src: &[u32]) -> Result<Vec<u32>> {
    assert_eq!(src.len(), 32 * 12);
    // 16-byte aligned source chunks.
    let mut words = vec![0u128; 32 * 3];
    bytemuck::cast_slice_mut::<u128, u32>(&mut words).copy_from_slice(src);
    let mut out = vec![0xDEAD_BEEFu32; 32 * 15];
    let p = k::CpAsyncSelftestParams {
        src: ptr(&words),
        out: ptr_mut(&mut out),
    };
    launch(
        Kernel {
            name: "cp_async_selftest_f16",
            func: super::bertrt_emu_cp_async_selftest_f16,
            params: p,
        },
        k::selftest_geometry(32 * 48),
    )?;
    Ok(out)
}

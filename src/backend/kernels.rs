//! The Rust side of the kernels in `kernels/*.cu`: their `#[repr(C)]` params
//! structs and their launch geometry. Shared by the CUDA launcher and the CPU
//! emulation (`backend::emu`), so the emulated tests run the real geometry.
//!
//! Every kernel takes one params struct by value. Device pointers are `u64`
//! (a `CUdeviceptr` on the GPU, a host address under emulation); each struct's
//! size is asserted here and (`BERTRT_PARAMS_SIZE`) in its `.cu` file.

use crate::backend::fp16::Launch;
use crate::config::Activation;

mod tc;
pub use tc::*;

/// Each kernel declared once: params struct => exported name in the fatbin,
/// and the same kernel compiled for the host (SIMT emulation, tests only).
/// The CUDA loader and the emulator both dispatch through [`Launch`].
macro_rules! kernels {
    ($($params:ty => $name:literal, $host:ident;)*) => {
        $(
            impl Launch for $params {
                const NAME: &'static str = $name;
                #[cfg(feature = "emulator")]
                const HOST: unsafe extern "C" fn(Self) = crate::backend::emu::$host;
            }
        )*
        /// Every kernel's exported name: what the CUDA loader looks up.
        pub const KERNEL_NAMES: &[&str] = &[$($name),*];
    };
}

kernels! {
    EmbeddingsLayerNormParams => "embeddings_layernorm_f16", bertrt_emu_embeddings_layernorm_f16;
    AddBiasResidualLayerNormParams => "add_bias_residual_layernorm_f16", bertrt_emu_add_bias_residual_layernorm_f16;
    BiasActParams => "bias_act_f16", bertrt_emu_bias_act_f16;
    AttentionParams => "attention_f16", bertrt_emu_attention_f16;
    GatherRowsParams => "gather_rows_f16", bertrt_emu_gather_rows_f16;
    CastF32Params => "cast_f32_f16", bertrt_emu_cast_f32_f16;
    PoolNormalizeParams => "pool_normalize_f16", bertrt_emu_pool_normalize_f16;
    AttentionTcParams<32> => "attention_tc_d32_f16", bertrt_emu_attention_tc_d32_f16;
    AttentionTcParams<64> => "attention_tc_d64_f16", bertrt_emu_attention_tc_d64_f16;
    AttentionTcParams<128> => "attention_tc_d128_f16", bertrt_emu_attention_tc_d128_f16;
    MmaSelftestParams => "mma_selftest_f16", bertrt_emu_mma_selftest_f16;
    LdmatrixSelftestParams => "ldmatrix_selftest_f16", bertrt_emu_ldmatrix_selftest_f16;
    CpAsyncSelftestParams => "cp_async_selftest_f16", bertrt_emu_cp_async_selftest_f16;
}

/// Grid and block dimensions plus dynamic shared memory, as given to a launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    pub smem_bytes: u32,
}

/// Halves per 16-byte load or store: the memory-bound kernels' unit
/// (`CHUNK` in common.cuh).
pub const CHUNK: usize = 8;

/// Threads for a block striding over `items` (columns, or chunks of 8): one
/// thread per item up to 256, rounded to whole warps (block_sum needs them).
pub fn row_block_threads(items: usize) -> u32 {
    (items.div_ceil(32) * 32).clamp(32, 256) as u32
}

/// Blocks for the grid-stride elementwise kernels: enough to cover `n` with
/// 256-thread blocks, capped (the loop does the rest).
pub fn elementwise_geometry(n: usize) -> Geometry {
    const THREADS: usize = 256;
    const MAX_BLOCKS: usize = 4096;
    Geometry {
        grid: (n.div_ceil(THREADS).clamp(1, MAX_BLOCKS) as u32, 1, 1),
        block: (THREADS as u32, 1, 1),
        smem_bytes: 0,
    }
}

/// The widest row the LayerNorms keep in registers, one warp per row
/// (`LN_WARP_MAX_CHUNKS` chunks of 8 per lane in common.cuh); wider rows take
/// a block per row, staged in shared memory.
pub const LN_WARP_MAX_WIDTH: usize = 4 * CHUNK * 32;
/// Rows per block on the LayerNorms' warp path (one warp each).
pub const LN_WARP_ROWS: usize = 4;

/// How a LayerNorm kernel covers rows of `width`: `chunks` (chunks of 8 per
/// lane, 1..=4, for the warp path; 0 for the block path) and the geometry
/// that goes with it. The kernel traps on a plan that does not cover the row.
pub fn layernorm_plan(rows: usize, width: usize) -> (i32, Geometry) {
    if width <= LN_WARP_MAX_WIDTH {
        let chunks = width.div_ceil(CHUNK * 32).max(1) as i32;
        let g = Geometry {
            grid: (rows.div_ceil(LN_WARP_ROWS) as u32, 1, 1),
            block: ((LN_WARP_ROWS * 32) as u32, 1, 1),
            smem_bytes: 0,
        };
        (chunks, g)
    } else {
        let g = Geometry {
            grid: (rows as u32, 1, 1),
            block: (row_block_threads(width.div_ceil(CHUNK)), 1, 1),
            smem_bytes: (width * 4) as u32,
        };
        (0, g)
    }
}

// ---- embeddings_layernorm.cu -------------------------------------------------

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EmbeddingsLayerNormParams {
    pub word: u64,
    pub pos: u64,
    /// 0: no token-type table.
    pub ty: u64,
    pub ids: u64,
    pub pos_ids: u64,
    pub type_ids: u64,
    pub gamma: u64,
    pub beta: u64,
    pub out: u64,
    pub tokens: i32,
    pub width: i32,
    pub vocab: u32,
    pub max_pos: u32,
    pub type_vocab: u32,
    pub eps: f32,
    /// From [`layernorm_plan`]: with the geometry it returns.
    pub chunks: i32,
    pub _pad: i32,
}
const _: () = assert!(std::mem::size_of::<EmbeddingsLayerNormParams>() == 104);

// ---- add_bias_residual_layernorm.cu ------------------------------------------

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct AddBiasResidualLayerNormParams {
    pub x: u64,
    /// 0: no bias.
    pub bias: u64,
    /// 0: no residual.
    pub residual: u64,
    pub gamma: u64,
    pub beta: u64,
    /// May equal `x`.
    pub out: u64,
    pub rows: i32,
    pub width: i32,
    pub eps: f32,
    /// From [`layernorm_plan`]: with the geometry it returns.
    pub chunks: i32,
}
const _: () = assert!(std::mem::size_of::<AddBiasResidualLayerNormParams>() == 64);

// ---- bias_act.cu -------------------------------------------------------------

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct BiasActParams {
    pub x: u64,
    /// 0: no bias.
    pub bias: u64,
    pub rows: i32,
    pub width: i32,
    pub act: ActCode,
    pub _pad: i32,
}
const _: () = assert!(std::mem::size_of::<BiasActParams>() == 32);

/// Most blocks a bias_act launch gets (about one wave of 256-thread blocks on
/// a 132-SM H100); its grid-stride loop over rows does the rest.
pub const BIAS_ACT_MAX_BLOCKS: usize = 1024;

/// bias_act's 2-D blocks of 256 threads: x strides over a row's chunks of 8
/// (whole warps, up to 256), y picks one of 256 / x rows.
pub fn bias_act_geometry(rows: usize, width: usize) -> Geometry {
    let tx = row_block_threads(width.div_ceil(CHUNK));
    let ty = 256 / tx;
    Geometry {
        grid: (
            rows.div_ceil(ty as usize).clamp(1, BIAS_ACT_MAX_BLOCKS) as u32,
            1,
            1,
        ),
        block: (tx, ty, 1),
        smem_bytes: 0,
    }
}

/// The `act` codes bias_act.cu switches on. The `.cu` `static_assert`s the
/// same numbers, and a test reads them from the `.cu` and compares.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActCode {
    Gelu = 0,
    GeluTanh = 1,
    GeluFast = 2,
    Relu = 3,
    Tanh = 4,
    /// Adds the bias only (linear layers without an activation).
    BiasOnly = 5,
}

impl ActCode {
    /// Every code with its name in bias_act.cu.
    pub const ALL: [(ActCode, &'static str); 6] = [
        (ActCode::Gelu, "ACT_GELU"),
        (ActCode::GeluTanh, "ACT_GELU_TANH"),
        (ActCode::GeluFast, "ACT_GELU_FAST"),
        (ActCode::Relu, "ACT_RELU"),
        (ActCode::Tanh, "ACT_TANH"),
        (ActCode::BiasOnly, "ACT_NONE"),
    ];

    /// The code for an activation; `None` adds the bias only.
    pub fn of(a: Option<Activation>) -> ActCode {
        match a {
            Some(Activation::Gelu) => ActCode::Gelu,
            Some(Activation::GeluTanh) => ActCode::GeluTanh,
            Some(Activation::GeluFast) => ActCode::GeluFast,
            Some(Activation::Relu) => ActCode::Relu,
            Some(Activation::Tanh) => ActCode::Tanh,
            None => ActCode::BiasOnly,
        }
    }
}

// ---- attention.cu ------------------------------------------------------------

/// Mirrors of attention.cu's constants.
pub const ATTN_ROWS: usize = 32;
pub const ATTN_KEYS: usize = 64;
pub const ATTN_THREADS: u32 = 128;
pub const ATTN_MAX_HEAD_DIM: usize = 128;

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct AttentionParams {
    pub qkv: u64,
    pub cu_seqlens: u64,
    pub out: u64,
    pub num_seqs: i32,
    pub heads: i32,
    pub head_dim: i32,
    /// Shared-memory row stride in halves: [`attention_smem_ld`].
    pub ld: i32,
    pub scale: f32,
    pub _pad: u32,
}
const _: () = assert!(std::mem::size_of::<AttentionParams>() == 48);

/// Head dim rounded up to even, + 2: an odd number of 32-bit words per row.
pub fn attention_smem_ld(head_dim: usize) -> usize {
    head_dim.div_ceil(2) * 2 + 2
}

/// attention.cu's carve-up: q_s, k_s, v_s (fp16, stride ld), s_s (fp32,
/// [ATTN_ROWS][ATTN_KEYS + 1]), l_s, alpha_s (fp32, [ATTN_ROWS]).
pub fn attention_smem_bytes(head_dim: usize) -> usize {
    let ld = attention_smem_ld(head_dim);
    (ATTN_ROWS + 2 * ATTN_KEYS) * ld * 2 + ATTN_ROWS * (ATTN_KEYS + 1) * 4 + 2 * ATTN_ROWS * 4
}

/// grid (num_seqs, heads, ceil(max_len / ATTN_ROWS)).
pub fn attention_geometry(
    num_seqs: usize,
    heads: usize,
    head_dim: usize,
    max_len: usize,
) -> Geometry {
    Geometry {
        grid: (
            num_seqs as u32,
            heads as u32,
            max_len.div_ceil(ATTN_ROWS).max(1) as u32,
        ),
        block: (ATTN_THREADS, 1, 1),
        smem_bytes: attention_smem_bytes(head_dim) as u32,
    }
}

// ---- gather_rows.cu ----------------------------------------------------------

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct GatherRowsParams {
    pub x: u64,
    pub row_ids: u64,
    pub out: u64,
    pub n: i32,
    pub rows: i32,
    pub width: i32,
    pub _pad: u32,
}
const _: () = assert!(std::mem::size_of::<GatherRowsParams>() == 40);

pub fn gather_rows_geometry(n: usize) -> Geometry {
    Geometry {
        grid: (n as u32, 1, 1),
        block: (128, 1, 1),
        smem_bytes: 0,
    }
}

// ---- cast_f32.cu -------------------------------------------------------------

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CastF32Params {
    pub x: u64,
    pub out: u64,
    pub n: i64,
}
const _: () = assert!(std::mem::size_of::<CastF32Params>() == 24);

// ---- pool_normalize.cu -------------------------------------------------------

/// The `mode` codes pool_normalize.cu switches on (its `POOL_*` defines).
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    /// out[i] = x[cu[i]]
    First = 0,
    /// out[i] = mean of x[cu[i]..cu[i + 1]]
    Mean = 1,
    /// out[i] = x[i]
    Each = 2,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PoolNormalizeParams {
    pub x: u64,
    /// [n + 1] i32 segment bounds; unused (may be 0) for [`PoolMode::Each`].
    pub cu: u64,
    /// [n, width] f32.
    pub out: u64,
    pub n: i32,
    pub rows: i32,
    pub width: i32,
    pub mode: PoolMode,
    /// 1: divide each output row by max(its L2 norm, 1e-12).
    pub normalize: i32,
    pub _pad: u32,
}
const _: () = assert!(std::mem::size_of::<PoolNormalizeParams>() == 48);

pub fn pool_normalize_geometry(n: usize, width: usize) -> Geometry {
    Geometry {
        grid: (n as u32, 1, 1),
        block: (row_block_threads(width), 1, 1),
        smem_bytes: (width * 4) as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(name, value)` for every `static_assert(ACT_X == N, ...)` in bias_act.cu.
    fn cu_static_asserts() -> Vec<(String, i32)> {
        let src = include_str!("../../kernels/bias_act.cu");
        src.lines()
            .filter_map(|l| l.trim().strip_prefix("static_assert("))
            .filter_map(|l| {
                let (name, rest) = l.split_once("==")?;
                let value = rest.split(',').next()?.trim().parse().ok()?;
                Some((name.trim().to_string(), value))
            })
            .collect()
    }

    #[test]
    fn act_codes_match_the_static_asserts_in_bias_act_cu() {
        let asserted = cu_static_asserts();
        assert_eq!(
            asserted.len(),
            ActCode::ALL.len(),
            "bias_act.cu should static_assert every act code: {asserted:?}"
        );
        for (code, name) in ActCode::ALL {
            let cu = asserted.iter().find(|(n, _)| n == name).map(|a| a.1);
            assert_eq!(
                cu,
                Some(code as i32),
                "{code:?}: Rust says {}, bias_act.cu static_asserts {name} == {cu:?}",
                code as i32
            );
        }
    }

    #[test]
    fn pool_modes_match_the_defines_in_pool_normalize_cu() {
        let src = include_str!("../../kernels/pool_normalize.cu");
        for (mode, name) in [
            (PoolMode::First, "POOL_FIRST"),
            (PoolMode::Mean, "POOL_MEAN"),
            (PoolMode::Each, "POOL_EACH"),
        ] {
            let line = format!("#define {name} {}", mode as i32);
            assert!(src.contains(&line), "pool_normalize.cu lacks `{line}`");
        }
    }

    #[test]
    fn every_activation_has_its_own_code() {
        let acts = [
            Some(Activation::Gelu),
            Some(Activation::GeluTanh),
            Some(Activation::GeluFast),
            Some(Activation::Relu),
            Some(Activation::Tanh),
            None,
        ];
        let codes: Vec<ActCode> = acts.iter().map(|&a| ActCode::of(a)).collect();
        let want: Vec<ActCode> = ActCode::ALL.iter().map(|c| c.0).collect();
        assert_eq!(codes, want);
    }
}

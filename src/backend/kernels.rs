//! The Rust side of the kernels in `kernels/*.cu`: their `#[repr(C)]` params
//! structs and their launch geometry. Shared by the CUDA launcher and the CPU
//! emulation (`backend::emu`), so the emulated tests run the real geometry.
//!
//! Every kernel takes one params struct by value. Device pointers are `u64`
//! (a `CUdeviceptr` on the GPU, a host address under emulation); each struct's
//! size is asserted here and (`BERTRT_PARAMS_SIZE`) in its `.cu` file.

use crate::config::Activation;

/// Grid and block dimensions plus dynamic shared memory, as given to a launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    pub smem_bytes: u32,
}

/// Threads for the one-block-per-row kernels (the LayerNorms, gather_rows):
/// one thread per column up to 256, rounded to whole warps (block_sum needs them).
pub fn row_block_threads(width: usize) -> u32 {
    (width.div_ceil(32) * 32).clamp(32, 256) as u32
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
}
const _: () = assert!(std::mem::size_of::<EmbeddingsLayerNormParams>() == 96);

pub fn embeddings_layernorm_geometry(tokens: usize, width: usize) -> Geometry {
    Geometry {
        grid: (tokens as u32, 1, 1),
        block: (row_block_threads(width), 1, 1),
        smem_bytes: (width * 4) as u32,
    }
}

// ---- add_bias_residual_layernorm.cu ------------------------------------------

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct AddBiasResidualLayerNormParams {
    pub x: u64,
    pub bias: u64,
    pub residual: u64,
    pub gamma: u64,
    pub beta: u64,
    /// May equal `x`.
    pub out: u64,
    pub rows: i32,
    pub width: i32,
    pub eps: f32,
}
const _: () = assert!(std::mem::size_of::<AddBiasResidualLayerNormParams>() == 64);

pub fn add_bias_residual_layernorm_geometry(rows: usize, width: usize) -> Geometry {
    Geometry {
        grid: (rows as u32, 1, 1),
        block: (row_block_threads(width), 1, 1),
        smem_bytes: (width * 4) as u32,
    }
}

// ---- bias_act.cu -------------------------------------------------------------

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct BiasActParams {
    pub x: u64,
    pub bias: u64,
    /// rows * width
    pub n: i64,
    pub width: i32,
    pub act: i32,
}
const _: () = assert!(std::mem::size_of::<BiasActParams>() == 32);

/// bias_act.cu's code for adding the bias with no activation.
pub const ACT_NONE: i32 = 5;

/// The `act` code bias_act.cu switches on.
pub fn act_code(a: Activation) -> i32 {
    match a {
        Activation::Gelu => 0,
        Activation::GeluTanh => 1,
        Activation::GeluFast => 2,
        Activation::Relu => 3,
        Activation::Tanh => 4,
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

//! Which GEMM code the CPU engine runs: chosen once from what this CPU has,
//! what was asked for, and `BERTRT_CPU_FORCE`.

use super::simd::features;

/// Which GEMM code the CPU engine runs, for the log and the tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmPath {
    /// AVX-512 f32 FMA tiles on packed weights.
    Avx512F32,
    /// bf16 weights and activations (rounded with AVX512-BF16) on the FMA
    /// tiles, widened in registers; f32 accumulation (`simd::tile_bf16`).
    Avx512Bf16,
    /// bf16 weights and activations on `vdpbf16ps` tiles, f32 accumulation
    /// (`dpbf16::tile_dpbf16`): where that instruction issues at the FMA
    /// rate (AMD), else the widened tiles are as fast.
    Avx512Dpbf16,
    /// AMX `tdpbf16ps` tiles on bf16 weights (the AVX512-BF16 tiles for
    /// shapes AMX tiles do not fit), f32 accumulation.
    AmxBf16,
    /// The `gemm` crate on the original weights (no AVX-512 here).
    Portable,
}

impl GemmPath {
    /// Whether the encoder's GEMMs compute in bf16 on this path.
    pub fn is_bf16(self) -> bool {
        matches!(
            self,
            GemmPath::Avx512Bf16 | GemmPath::Avx512Dpbf16 | GemmPath::AmxBf16
        )
    }

    /// Whether this CPU has the instructions the path needs.
    pub fn runs_here(self) -> bool {
        let f = features();
        match self {
            GemmPath::Portable => true,
            GemmPath::Avx512F32 => f.avx512,
            GemmPath::Avx512Bf16 | GemmPath::Avx512Dpbf16 => f.avx512_bf16,
            GemmPath::AmxBf16 => f.avx512_bf16 && super::amx::available(),
        }
    }
}

impl std::fmt::Display for GemmPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GemmPath::Avx512F32 => "f32, avx512 tiles",
            GemmPath::Avx512Bf16 => "bf16, avx512-bf16 tiles (widened to f32 FMAs)",
            GemmPath::Avx512Dpbf16 => "bf16, avx512-bf16 vdpbf16ps tiles",
            GemmPath::AmxBf16 => "bf16, amx tiles",
            GemmPath::Portable => "f32, portable gemm",
        })
    }
}

/// Set to `portable` to refuse every AVX-512 path (as on a CPU without
/// it), `no-bf16` to refuse the bf16 instructions, `no-amx` to refuse
/// only AMX, or `no-dot` to refuse `vdpbf16ps` (and AMX) for the widened
/// bf16 tiles: how the fallbacks are tested on a machine that has them all.
pub const FORCE_ENV: &str = "BERTRT_CPU_FORCE";

/// The path for a wish for bf16 or not on this CPU, and why it differs
/// when it does.
pub fn choose_path(want_bf16: bool) -> (GemmPath, Option<String>) {
    let force = std::env::var(FORCE_ENV).unwrap_or_default();
    let f = features();
    let avx512 = f.avx512 && force != "portable";
    let bf16 = f.avx512_bf16 && avx512 && force != "no-bf16";
    let amx = bf16 && force != "no-amx" && force != "no-dot" && super::amx::available();
    let dot = bf16 && force != "no-dot" && f.bf16_dot_at_fma_rate;
    let why = if force.is_empty() {
        "this CPU has".to_string()
    } else {
        format!("with {FORCE_ENV}={force} bertrt uses")
    };
    match (want_bf16, avx512, bf16) {
        (true, _, true) if amx => (GemmPath::AmxBf16, None),
        (true, _, true) if dot => (GemmPath::Avx512Dpbf16, None),
        (true, _, true) => (GemmPath::Avx512Bf16, None),
        (true, true, false) => (
            GemmPath::Avx512F32,
            Some(format!(
                "dtype bf16: {why} neither AVX512-BF16 nor AMX-BF16; computing in f32"
            )),
        ),
        (true, false, _) => (
            GemmPath::Portable,
            Some(format!(
                "dtype bf16: {why} no AVX-512 at all; computing in f32 with the portable GEMM"
            )),
        ),
        (false, true, _) => (GemmPath::Avx512F32, None),
        (false, false, _) => (GemmPath::Portable, None),
    }
}

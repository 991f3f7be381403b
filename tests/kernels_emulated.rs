//! Tier 1: every CUDA kernel (kernels/*.cu), run on the CPU under the SIMT
//! emulation (`bertrt::backend::emu`), against the f32 CPU reference ops.
//!
//! Fresh random inputs on awkward shapes (widths not multiples of 8 or of the
//! block, one-token and empty sequences, mixed lengths in one packed batch),
//! outputs poisoned with NaN before each run, inputs rounded to fp16 before the
//! reference sees them. A mismatch prints the first offenders and the max
//! abs/rel error; passing runs print the max errors (see --nocapture).
//!
//! Tolerances (atol + rtol * |ref|): outputs are fp16, so half an ulp of
//! rounding is 2^-11 |ref| ~ 4.9e-4 |ref| on its own; measured max errors are
//! printed per case and recorded in the constants below.

mod common;

use bertrt::backend::cpu::ops;
use bertrt::backend::emu;
use bertrt::config::Activation;
use half::f16;

/// xorshift64*: a fresh seed per case, printed so a failure can be replayed.
struct Rng(u64);
impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [lo, hi).
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
    }
    fn below(&mut self, n: u32) -> u32 {
        (self.next_u64() % n as u64) as u32
    }
    /// `n` values in [lo, hi), already representable in fp16: (fp16, f32).
    fn halves(&mut self, n: usize, lo: f32, hi: f32) -> (Vec<f16>, Vec<f32>) {
        let h: Vec<f16> = (0..n)
            .map(|_| f16::from_f32(self.uniform(lo, hi)))
            .collect();
        let f = h.iter().map(|v| v.to_f32()).collect();
        (h, f)
    }
}

fn seed() -> u64 {
    // Fresh inputs every run; BERTRT_TEST_SEED replays one.
    std::env::var("BERTRT_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

/// Asserts |got - want| <= atol + rtol * |want| everywhere (NaN fails).
fn check(case: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{case}: length");
    let (mut max_abs, mut max_rel) = (0f32, 0f32);
    let mut bad = Vec::new();
    let mut non_finite = 0usize;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        // Written so that a NaN error counts as a mismatch.
        let within = err <= atol + rtol * w.abs();
        if !within {
            bad.push(i);
        }
        if !g.is_finite() {
            non_finite += 1;
        }
        if err.is_finite() {
            max_abs = max_abs.max(err);
            max_rel = max_rel.max(err / w.abs().max(1e-6));
        }
    }
    if !bad.is_empty() {
        let mut msg = format!(
            "{case}: {} of {} values outside {atol:e} + {rtol:e}*|ref| ({non_finite} NaN/inf; over finite values: max abs err {max_abs:.3e}, max rel err {max_rel:.3e})\nfirst mismatches:\n",
            bad.len(),
            got.len()
        );
        for &i in bad.iter().take(8) {
            msg += &format!("  [{i}] got {} want {}\n", got[i], want[i]);
        }
        panic!("{msg}");
    }
    common::record::figure(&format!(
        "{case}: ok, max abs err {max_abs:.3e}, max rel err {max_rel:.3e}"
    ));
}

fn to_f32(h: &[f16]) -> Vec<f32> {
    h.iter().map(|v| v.to_f32()).collect()
}

// Max errors measured over repeated runs (fresh seeds), then ~3x margin. All
// are at the level of the fp16 output rounding (half an ulp: 4.9e-4 in [1,2),
// 9.8e-4 in [2,4), 1.95e-3 in [4,8)):
//   LayerNorms: max abs 1.1e-3 (|y| up to ~4), rel 4.9e-4 away from 0.
//   bias_act: max abs 1.95e-3 (= half an ulp at |y| in [4,6)); rel error is
//     only large where GELU crosses 0 and |ref| is tiny (absorbed by atol).
//   attention: max abs 4.9e-4 (|o| < 2), head_dim 6..128, lengths 0..260.
const LN_ATOL: f32 = 5e-4;
const LN_RTOL: f32 = 2e-3;
const ACT_ATOL: f32 = 5e-4;
const ACT_RTOL: f32 = 2e-3;
const ATTN_ATOL: f32 = 5e-4;
const ATTN_RTOL: f32 = 2e-3;

#[test]
fn embeddings_layernorm_matches_reference() {
    let mut rng = Rng::new(seed());
    // (tokens, width, with token-type table)
    for &(tokens, width, with_ty) in &[
        (1, 37, true),
        (9, 43, false),
        (13, 128 + 5, true),
        (4, 768, true),
        (3, 300, false),
    ] {
        let (vocab, max_pos, type_vocab) = (50, 40, 3);
        let (word_h, word) = rng.halves(vocab * width, -1.0, 1.0);
        let (pos_h, pos) = rng.halves(max_pos * width, -0.5, 0.5);
        let (ty_h, ty) = rng.halves(type_vocab * width, -0.3, 0.3);
        let (gamma_h, gamma) = rng.halves(width, 0.5, 1.5);
        let (beta_h, beta) = rng.halves(width, -0.5, 0.5);
        let ids: Vec<u32> = (0..tokens).map(|_| rng.below(vocab as u32)).collect();
        let pos_ids: Vec<u32> = (0..tokens).map(|_| rng.below(max_pos as u32)).collect();
        let type_ids: Vec<u32> = (0..tokens).map(|_| rng.below(type_vocab as u32)).collect();
        let mut out = vec![f16::NAN; tokens * width];
        let ty_opt = with_ty.then_some(&ty_h[..]);
        emu::embeddings_layernorm(
            &word_h, &pos_h, ty_opt, &ids, &pos_ids, &type_ids, &gamma_h, &beta_h, 1e-12, &mut out,
        )
        .unwrap();
        let mut want = vec![0f32; tokens * width];
        let ty_ref: &[f32] = if with_ty { &ty } else { &[] };
        ops::embeddings(
            &word, &pos, ty_ref, &ids, &pos_ids, &type_ids, &gamma, &beta, 1e-12, &mut want,
        );
        let case =
            format!("embeddings_layernorm tokens={tokens} width={width} type_table={with_ty}");
        check(&case, &to_f32(&out), &want, LN_ATOL, LN_RTOL);
    }
}

#[test]
fn embeddings_layernorm_traps_on_bad_id() {
    let width = 40;
    let table = vec![f16::ONE; 10 * width];
    let gamma = vec![f16::ONE; width];
    let beta = vec![f16::ZERO; width];
    let mut out = vec![f16::NAN; 2 * width];
    let err = emu::embeddings_layernorm(
        &table,
        &table,
        None,
        &[3, 10],
        &[0, 1],
        &[],
        &gamma,
        &beta,
        1e-5,
        &mut out,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("__trap"), "{err}");
    println!("bad id: {err}");
}

#[test]
fn add_bias_residual_layernorm_matches_reference() {
    let mut rng = Rng::new(seed());
    for &(rows, width) in &[(1, 37), (5, 43), (7, 256 + 3), (3, 1024), (2, 8)] {
        let (x_h, mut x) = rng.halves(rows * width, -3.0, 3.0);
        let (res_h, res) = rng.halves(rows * width, -3.0, 3.0);
        let (bias_h, bias) = rng.halves(width, -1.0, 1.0);
        let (gamma_h, gamma) = rng.halves(width, 0.5, 1.5);
        let (beta_h, beta) = rng.halves(width, -0.5, 0.5);
        let mut got = x_h.clone();
        emu::add_bias_residual_layernorm(&mut got, &bias_h, &res_h, &gamma_h, &beta_h, 1e-5)
            .unwrap();
        ops::add_bias_residual_layernorm(&mut x, &bias, &res, &gamma, &beta, 1e-5);
        let case = format!("add_bias_residual_layernorm rows={rows} width={width}");
        check(&case, &to_f32(&got), &x, LN_ATOL, LN_RTOL);
    }
}

#[test]
fn bias_act_matches_reference_for_every_activation() {
    let mut rng = Rng::new(seed());
    for act in [
        Activation::Gelu,
        Activation::GeluTanh,
        Activation::GeluFast,
        Activation::Relu,
        Activation::Tanh,
    ] {
        for &(rows, width) in &[(5, 37), (3, 40 + 3), (17, 300)] {
            let (x_h, mut x) = rng.halves(rows * width, -5.0, 5.0);
            let (bias_h, bias) = rng.halves(width, -1.0, 1.0);
            let mut got = x_h.clone();
            emu::bias_act(&mut got, &bias_h, act).unwrap();
            ops::bias_act(&mut x, &bias, act);
            check(
                &format!("bias_act {act:?} rows={rows} width={width}"),
                &to_f32(&got),
                &x,
                ACT_ATOL,
                ACT_RTOL,
            );
        }
    }
}

/// relu(x + 0) is exact in fp32, so the kernel's only rounding is
/// __float2half: it must match the half crate bit for bit (round to nearest
/// even, subnormals, overflow to inf).
#[test]
fn float_to_half_rounding_is_bit_exact() {
    let mut rng = Rng::new(seed());
    let width = 61;
    let mut xs: Vec<f16> = (0..width * 40)
        .map(|_| f16::from_bits(rng.below(0x7c00) as u16))
        .collect();
    xs[0] = f16::MAX;
    xs[1] = f16::from_bits(1); // smallest subnormal
    xs[2] = f16::from_bits(0x03ff); // largest subnormal
    let bias: Vec<f16> = (0..width)
        .map(|i| f16::from_bits(rng.below(0x7c00) as u16 | if i % 3 == 0 { 0 } else { 0x8000 }))
        .collect();
    let mut got = xs.clone();
    emu::bias_act(&mut got, &bias, Activation::Relu).unwrap();
    for (i, (g, x)) in got.iter().zip(&xs).enumerate() {
        let want = f16::from_f32((x.to_f32() + bias[i % width].to_f32()).max(0.0));
        assert_eq!(
            g.to_bits(),
            want.to_bits(),
            "[{i}] {x} + {}: got {g} want {want}",
            bias[i % width]
        );
    }
}

fn attention_case(rng: &mut Rng, lens: &[usize], heads: usize, head_dim: usize) {
    let mut cu = vec![0usize];
    for &l in lens {
        cu.push(cu.last().unwrap() + l);
    }
    let tokens = *cu.last().unwrap();
    let h = heads * head_dim;
    let (qkv_h, qkv) = rng.halves(tokens * 3 * h, -2.0, 2.0);
    let cu_i32: Vec<i32> = cu.iter().map(|&c| c as i32).collect();
    let mut out = vec![f16::NAN; tokens * h];
    emu::attention(&qkv_h, &cu_i32, heads, head_dim, &mut out).unwrap();
    let mut want = vec![0f32; tokens * h];
    ops::attention_packed(&qkv, &cu, heads, head_dim, &mut want);
    let case = format!("attention lens={lens:?} heads={heads} head_dim={head_dim}");
    check(&case, &to_f32(&out), &want, ATTN_ATOL, ATTN_RTOL);
}

#[test]
fn attention_matches_reference_on_mixed_packed_batches() {
    let mut rng = Rng::new(seed());
    attention_case(&mut rng, &[1, 7, 33, 64 + 5], 2, 8);
    attention_case(&mut rng, &[3, 0, 1, 20], 2, 6); // an empty sequence in the middle
    attention_case(&mut rng, &[5, 64, 65], 3, 32);
    attention_case(&mut rng, &[1, 33, 70], 2, 64);
    attention_case(&mut rng, &[40, 97], 1, 128);
    attention_case(&mut rng, &[17], 1, 100); // head_dim not a multiple of 8
}

#[test]
fn attention_matches_reference_on_a_long_sequence() {
    let mut rng = Rng::new(seed());
    attention_case(&mut rng, &[260], 2, 64);
}

#[test]
fn gather_rows_picks_first_tokens() {
    let mut rng = Rng::new(seed());
    let (width, lens) = (37, [1usize, 7, 33, 4]);
    let tokens: usize = lens.iter().sum();
    let (x, _) = rng.halves(tokens * width, -1.0, 1.0);
    let mut firsts = vec![0i32];
    for l in &lens[..lens.len() - 1] {
        firsts.push(firsts.last().unwrap() + *l as i32);
    }
    let mut out = vec![f16::NAN; firsts.len() * width];
    emu::gather_rows(&x, width, &firsts, &mut out).unwrap();
    for (i, &r) in firsts.iter().enumerate() {
        let want = &x[r as usize * width..][..width];
        let got = &out[i * width..][..width];
        assert!(
            got.iter()
                .zip(want)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "row {i} (token {r})"
        );
    }
    let err = emu::gather_rows(&x, width, &[tokens as i32], &mut out[..width]).unwrap_err();
    assert!(err.to_string().contains("__trap"), "{err}");
}

#[test]
fn cast_f32_is_exact() {
    let mut rng = Rng::new(seed());
    let mut x: Vec<f16> = (0..1000 + 3)
        .map(|_| f16::from_bits(rng.below(0x10000) as u16))
        .collect();
    x[..6].copy_from_slice(&[
        f16::INFINITY,
        f16::NEG_INFINITY,
        f16::from_bits(1),
        f16::from_bits(0x83ff),
        f16::NEG_ZERO,
        f16::MAX,
    ]);
    let mut out = vec![f32::NAN; x.len()];
    emu::cast_f32(&x, &mut out).unwrap();
    for (i, (h, f)) in x.iter().zip(&out).enumerate() {
        let want = h.to_f32();
        assert!(
            want.to_bits() == f.to_bits() || (want.is_nan() && f.is_nan()),
            "[{i}] {h:?}: got {f} want {want}"
        );
    }
}

/// More elements than the capped grid has threads (4096 blocks x 256), so the
/// grid-stride loop takes a second lap.
#[test]
fn bias_act_grid_stride_covers_large_inputs() {
    let mut rng = Rng::new(seed());
    let (rows, width) = (1100, 1000 + 3);
    let (x_h, mut x) = rng.halves(rows * width, -5.0, 5.0);
    let (bias_h, bias) = rng.halves(width, -1.0, 1.0);
    let mut got = x_h.clone();
    emu::bias_act(&mut got, &bias_h, Activation::GeluTanh).unwrap();
    ops::bias_act(&mut x, &bias, Activation::GeluTanh);
    check(
        &format!("bias_act GeluTanh rows={rows} width={width}"),
        &to_f32(&got),
        &x,
        ACT_ATOL,
        ACT_RTOL,
    );
}

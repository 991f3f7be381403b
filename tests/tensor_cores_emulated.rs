//! The SIMT emulation's tensor-core and async-copy instructions (mma.sync
//! m16n8k16, ldmatrix, cp.async groups) against the PTX ISA's documented
//! behaviour, and the tensor-core attention kernel (attention_tc.cu) against
//! the f32 CPU reference.

mod common;

use bertrt::backend::cpu::ops;
use bertrt::backend::emu;
use bertrt::backend::emu::EmuSeam;
use bertrt::rng::Rng;
use half::f16;
use std::time::Instant;

/// Random fp16 values in [-scale, scale): (fp16, the same as f32).
fn halves(rng: &mut Rng, n: usize, scale: f32) -> (Vec<f16>, Vec<f32>) {
    let h: Vec<f16> = (0..n).map(|_| f16::from_f32(rng.unit() * scale)).collect();
    let f = h.iter().map(|v| v.to_f32()).collect();
    (h, f)
}

/// An emulated mma on random data equals a plain matrix product.
#[test]
fn mma_equals_a_plain_matrix_product() {
    let line = common::seam_tensor_cores::mma_equals_a_plain_product(&EmuSeam::new());
    common::record::figure(&line);
}

/// Every ldmatrix variant moves the documented elements.
#[test]
fn ldmatrix_moves_the_documented_elements() {
    let line = common::seam_tensor_cores::ldmatrix_moves_the_documented_elements(&EmuSeam::new());
    common::record::figure(&line);
}

/// cp.async groups: wait_group N completes every committed group but the
/// newest N, and (the emulation completes each copy as late as PTX allows)
/// nothing else, so a read before the wait sees the old bytes.
#[test]
fn cp_async_wait_group_completes_the_older_groups_only() {
    let line = common::seam_tensor_cores::cp_async_wait_group_completes_the_older_groups(
        &EmuSeam::new(),
        true,
    );
    common::record::figure(&line);
}

// attention_tc.cu against ops::attention_packed (f32 throughout, exact
// softmax). The kernel rounds P to fp16 for P V (as flash-attention does) and
// the output to fp16; l sums the rounded P. Measured (2026-12-02; q, k, v
// uniform in [-2, 2), |o| < 2, docs/perf/attention.md): max abs error
// 5.3e-4 .. 6.6e-4 over head_dim 32/64/128, where attention.cu (fp32 P) gives
// 4.9e-4, half an fp16 ulp in [1, 2): P's rounding adds up to ~1.7e-4. What
// these tolerances catch (planted once each): the online-softmax rescale of
// O dropped; keys masked with `key <= len` (one key too many); the K/V
// tile's cp.async.wait_group 1 made 2 (tile used before it landed: NaN from
// the poisoned shared memory); a shared block's __syncthreads after the tile
// wait removed (NaN), or the one after the tile's use (a stage overwritten
// while read: 59664 of 177408 values off at head_dim 64); two lanes' mma
// fragments swapped in the emulation.
const TC_ATOL: f32 = 1e-3;
const TC_RTOL: f32 = 2e-3;

/// Runs attention_tc on one packed batch and compares; returns the max abs
/// error.
fn attention_tc_case(seed: u64, lens: &[usize], heads: usize, head_dim: usize) -> f32 {
    let mut rng = Rng::new(seed);
    let mut cu = vec![0usize];
    for &l in lens {
        cu.push(cu.last().unwrap() + l);
    }
    let tokens = *cu.last().unwrap();
    let h = heads * head_dim;
    let (qkv_h, qkv) = halves(&mut rng, tokens * 3 * h, 2.0);
    let cu_i32: Vec<i32> = cu.iter().map(|&c| c as i32).collect();
    let mut out = vec![f16::NAN; tokens * h];
    let t0 = Instant::now();
    emu::attention_tc(&qkv_h, &cu_i32, heads, head_dim, &mut out).unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let mut want = vec![0f32; tokens * h];
    ops::attention_packed(&qkv, &cu, heads, head_dim, &mut want);
    let case =
        format!("attention_tc lens={lens:?} heads={heads} head_dim={head_dim} (seed {seed})");
    let mut max_abs = 0f32;
    let mut bad = Vec::new();
    for (i, (g, w)) in out.iter().map(|v| v.to_f32()).zip(&want).enumerate() {
        let err = (g - w).abs();
        if err.is_nan() || err > TC_ATOL + TC_RTOL * w.abs() {
            bad.push(format!("[token {}, col {}] got {g} want {w}", i / h, i % h));
        } else {
            max_abs = max_abs.max(err);
        }
    }
    assert!(
        bad.is_empty(),
        "{case}: {} of {} values outside {TC_ATOL:e} + {TC_RTOL:e}*|ref|; first: {}",
        bad.len(),
        out.len(),
        bad[..bad.len().min(6)].join(", ")
    );
    common::record::figure(&format!(
        "{case}: ok, max abs err {max_abs:.3e}, emulated in {secs:.1} s"
    ));
    max_abs
}

/// head_dim 64 (BERT-base/-large, RoBERTa, ALBERT, ELECTRA): every length
/// class around the 16-row query tiles and 32-key K/V tiles, in one batch.
#[test]
fn attention_tc_d64_matches_reference_on_one_packed_batch() {
    attention_tc_case(64, &[1, 7, 16, 17, 63, 64, 65, 128, 129, 384, 512], 2, 64);
}

/// head_dim 32 (MiniLM) and 128: shorter lists, two heads (the head offset).
#[test]
fn attention_tc_d32_and_d128_match_reference() {
    attention_tc_case(32, &[1, 15, 16, 33, 100], 2, 32);
    attention_tc_case(128, &[5, 31, 32, 70], 2, 128);
}

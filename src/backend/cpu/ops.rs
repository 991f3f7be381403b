//! The f32 reference ops. Plain and obviously correct: every CUDA kernel is
//! checked against one of these, and the CPU engine is built from them.
//!
//! Layouts: activations are `[tokens, width]` row-major; a packed batch is a
//! flat token list plus `cu_seqlens` (sequence s owns rows
//! `cu_seqlens[s]..cu_seqlens[s+1]`).

use super::native::{self, matmul, View};
use crate::config::Activation;
use rayon::prelude::*;

/// One activation value, in f32, exactly as PyTorch/HF define it.
pub fn act(x: f32, a: Activation) -> f32 {
    match a {
        // x * Phi(x), erf form (nn.functional.gelu default). Written in
        // PyTorch's order, x * (1/sqrt 2), as bias_act.cu is: 1 + erf cancels
        // for x < -4, where dividing by sqrt 2 instead moves the fp16 result
        // by up to 3 ulps.
        Activation::Gelu => 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2)),
        // HF gelu_new / gelu_pytorch_tanh: tanh approximation, sqrt(2/pi)
        // rounded once from the exact value (as PyTorch and bias_act.cu).
        Activation::GeluTanh => {
            let c = 0.797_884_6_f32;
            0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
        }
        // HF gelu_fast: 0.5x(1 + tanh(x * 0.7978845608 * (1 + 0.044715 x^2))).
        Activation::GeluFast => {
            0.5 * x * (1.0 + (x * 0.797_884_6 * (1.0 + 0.044715 * x * x)).tanh())
        }
        Activation::Relu => x.max(0.0),
        Activation::Tanh => x.tanh(),
    }
}

/// erf in f32 from the C library (glibc's erff: <= 1 ulp; max |erff - erf|
/// 4e-8 on [-10, 10], i.e. GELU error < 1e-7, far below the 1e-4 tolerance
/// against PyTorch). An f64 series here was 37% of a bert-base forward on
/// the CPU; it survives as the test oracle `erf_f64`.
pub fn erf(x: f32) -> f32 {
    native::erff(x)
}

/// An f64 erf (series / continued fraction): the test oracle that `erf` and
/// the kernels' GELU are checked against. Not used on the forward path.
pub fn erf_f64(x: f64) -> f64 {
    // Abramowitz-Stegun 7.1.26 is only 1e-7 absolute; use the series / continued
    // fraction split, accurate to ~1e-15.
    let ax = x.abs();
    let r = if ax < 2.5 {
        // Maclaurin series: erf(x) = 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1))
        let mut sum = 0.0;
        let mut term = ax;
        let x2 = ax * ax;
        let mut n = 0.0;
        loop {
            let t = term / (2.0 * n + 1.0);
            sum += t;
            if t.abs() < 1e-17 {
                break;
            }
            n += 1.0;
            term *= -x2 / n;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else if ax < 6.0 {
        // erfc continued fraction (Lentz), converges quickly for x >= 2.5.
        let tiny = 1e-300;
        let mut f = ax;
        let mut c = ax;
        let mut d = 0.0;
        for k in 1..200 {
            let a = k as f64 / 2.0;
            d = ax + a * d;
            d = if d.abs() < tiny { tiny } else { d };
            c = ax + a / c;
            c = if c.abs() < tiny { tiny } else { c };
            d = 1.0 / d;
            let delta = c * d;
            f *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        1.0 - (-ax * ax).exp() / (f * std::f64::consts::PI.sqrt())
    } else {
        1.0
    };
    if x < 0.0 {
        -r
    } else {
        r
    }
}

/// In place: x[r] = LN(x[r]) * gamma + beta for every row of `gamma.len()`.
pub fn layer_norm_rows(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let w = gamma.len();
    x.par_chunks_mut(w)
        .for_each(|row| layer_norm_row(row, gamma, beta, eps));
}

fn layer_norm_row(row: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let n = row.len() as f64;
    let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let inv = 1.0 / (var + eps as f64).sqrt();
    for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
        *v = ((*v as f64 - mean) * inv) as f32 * g + b;
    }
}

/// In place: x = LN(x + bias + residual), row width `bias.len()`.
pub fn add_bias_residual_layernorm(
    x: &mut [f32],
    bias: &[f32],
    residual: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) {
    let w = bias.len();
    x.par_chunks_mut(w)
        .zip(residual.par_chunks(w))
        .for_each(|(row, res)| {
            for ((v, b), r) in row.iter_mut().zip(bias).zip(res) {
                *v += b + r;
            }
            layer_norm_row(row, gamma, beta, eps);
        });
}

/// In place: x = act(x + bias), row width `bias.len()`.
pub fn bias_act(x: &mut [f32], bias: &[f32], a: Activation) {
    let w = bias.len();
    x.par_chunks_mut(w).for_each(|row| {
        for (v, b) in row.iter_mut().zip(bias) {
            *v = act(*v + b, a);
        }
    });
}

/// In place: x += bias per row.
pub fn add_bias(x: &mut [f32], bias: &[f32]) {
    let w = bias.len();
    x.par_chunks_mut(w).for_each(|row| {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    });
}

/// Embedding gather + layernorm: out[t] = LN(word[ids[t]] + pos[pos_ids[t]] + ty[type_ids[t]]).
/// Tables are `[rows, width]`; `ty` may be empty (no token types). Ids are
/// validated by the caller.
#[allow(clippy::too_many_arguments)]
pub fn embeddings(
    word: &[f32],
    pos: &[f32],
    ty: &[f32],
    ids: &[u32],
    pos_ids: &[u32],
    type_ids: &[u32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    out: &mut [f32],
) {
    let w = gamma.len();
    out.par_chunks_mut(w).enumerate().for_each(|(t, row)| {
        let wr = &word[ids[t] as usize * w..][..w];
        let pr = &pos[pos_ids[t] as usize * w..][..w];
        for i in 0..w {
            row[i] = wr[i] + pr[i];
        }
        if !ty.is_empty() {
            let tr = &ty[type_ids[t] as usize * w..][..w];
            for i in 0..w {
                row[i] += tr[i];
            }
        }
        layer_norm_row(row, gamma, beta, eps);
    });
}

/// Multi-head self-attention over packed sequences.
///
/// `qkv`: `[T, 3*H]`, each row `q | k | v` with `H = heads * head_dim` and head
/// h at columns `h*head_dim..`; `out`: `[T, H]`. Softmax(QK^T / sqrt(d)) V
/// within each sequence only, so no mask is needed and padding cannot leak.
pub fn attention_packed(
    qkv: &[f32],
    cu_seqlens: &[usize],
    heads: usize,
    head_dim: usize,
    out: &mut [f32],
) {
    let h = heads * head_dim;
    let scale = 1.0 / (head_dim as f32).sqrt();
    each_head_copied(cu_seqlens, heads, head_dim, out, |s, hd, mut dst| {
        let (a, b) = (cu_seqlens[s], cu_seqlens[s + 1]);
        let len = b - a;
        if len == 0 {
            return;
        }
        let base = a * 3 * h + hd * head_dim;
        // Q [len, d], K [len, d] and V [len, d] inside qkv, rows 3H apart.
        let rows = |offset| View {
            data: qkv,
            offset,
            rows: len,
            cols: head_dim,
            row_stride: 3 * h,
            col_stride: 1,
        };
        let mut p = vec![0f32; len * len];
        // S = Q K^T * scale
        matmul(&mut p, rows(base), rows(base + h).t(), scale, false);
        // P = softmax(S) per row
        for row in p.chunks_mut(len) {
            let m = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
            let mut sum = 0.0;
            for x in row.iter_mut() {
                *x = (*x - m).exp();
                sum += *x;
            }
            let inv = 1.0 / sum;
            for x in row.iter_mut() {
                *x *= inv;
            }
        }
        // O = P V
        let mut o = vec![0f32; len * head_dim];
        matmul(
            &mut o,
            View::row_major(&p, len, len),
            rows(base + 2 * h),
            1.0,
            false,
        );
        dst.put_rows(0, &o, head_dim);
    });
}

/// Where one head's `[len, head_dim]` output goes: row `i` at
/// `rows[at + i * ld..][..head_dim]`.
pub struct HeadOut<'a> {
    pub rows: &'a mut [f32],
    pub at: usize,
    pub ld: usize,
}

impl<'a> HeadOut<'a> {
    /// Head `hd`'s columns of a sequence's rows (`heads * d` per token).
    pub fn in_rows(rows: &'a mut [f32], hd: usize, d: usize, heads: usize) -> Self {
        let (at, ld) = (hd * d, heads * d);
        HeadOut { rows, at, ld }
    }

    /// Puts rows `r0..` of the head's output from `o` (rows `d` apart).
    pub fn put_rows(&mut self, r0: usize, o: &[f32], d: usize) {
        for (i, oi) in o.chunks(d).enumerate() {
            self.rows[self.at + (r0 + i) * self.ld..][..d].copy_from_slice(oi);
        }
    }
}

/// Runs `head(s, hd, dst)` for every (sequence, head) on rayon's threads,
/// each writing that head's `[len, head_dim]` output through `dst` into
/// `out` (`[T, heads * head_dim]`): the fast attentions' shared frame.
/// With at least 4 sequences per thread, a task is a sequence and its heads
/// write straight into its rows; with fewer, as [`each_head_copied`].
pub fn per_sequence_head(
    cu_seqlens: &[usize],
    heads: usize,
    head_dim: usize,
    out: &mut [f32],
    head: impl Fn(usize, usize, HeadOut) + Sync,
) {
    let h = heads * head_dim;
    let rows = sequence_rows(cu_seqlens, h, out);
    if rows.len() < 4 * rayon::current_num_threads() {
        return each_head_copied(cu_seqlens, heads, head_dim, out, head);
    }
    rows.into_par_iter().enumerate().for_each(|(s, seq)| {
        for hd in 0..heads {
            head(s, hd, HeadOut::in_rows(seq, hd, head_dim, heads));
        }
    });
}

/// [`per_sequence_head`] with a task per head (so a lone sequence still
/// uses every thread), each head's output in its own buffer and copied into
/// `out` afterwards. The reference attention's frame.
pub fn each_head_copied(
    cu_seqlens: &[usize],
    heads: usize,
    head_dim: usize,
    out: &mut [f32],
    head: impl Fn(usize, usize, HeadOut) + Sync,
) {
    let h = heads * head_dim;
    let seqs = cu_seqlens.len().saturating_sub(1);
    let items: Vec<(usize, usize)> = (0..seqs)
        .flat_map(|s| (0..heads).map(move |hd| (s, hd)))
        .collect();
    let results: Vec<Vec<f32>> = items
        .par_iter()
        .map(|&(s, hd)| {
            let len = cu_seqlens[s + 1] - cu_seqlens[s];
            let mut o = vec![0f32; len * head_dim];
            let ld = head_dim;
            head(
                s,
                hd,
                HeadOut {
                    rows: &mut o,
                    at: 0,
                    ld,
                },
            );
            o
        })
        .collect();
    sequence_rows(cu_seqlens, h, out)
        .into_par_iter()
        .zip(results.par_chunks(heads.max(1)))
        .for_each(|(seq, outs)| {
            for (hd, o) in outs.iter().enumerate() {
                HeadOut::in_rows(seq, hd, head_dim, heads).put_rows(0, o, head_dim);
            }
        });
}

/// Each sequence's rows of `out` (`h` values per token).
fn sequence_rows<'a>(cu_seqlens: &[usize], h: usize, out: &'a mut [f32]) -> Vec<&'a mut [f32]> {
    let mut rows = Vec::with_capacity(cu_seqlens.len());
    let mut rest = &mut out[cu_seqlens.first().map_or(0, |&a| a * h)..];
    for w in cu_seqlens.windows(2) {
        let (seq, tail) = rest.split_at_mut((w[1] - w[0]) * h);
        rows.push(seq);
        rest = tail;
    }
    rows
}

/// y[m, n] = x[m, k] * w[n, k]^T (+ bias[n]): a PyTorch nn.Linear with the
/// weight in its stored `[out, in]` layout.
pub fn linear(x: &[f32], w: &[f32], bias: Option<&[f32]>, k: usize, y: &mut [f32]) {
    // Real asserts, not debug ones: they are what keeps a short buffer a
    // panic rather than a read or write out of bounds in release.
    assert!(
        k > 0 && x.len().is_multiple_of(k) && w.len().is_multiple_of(k),
        "linear: x ({}) and w ({}) must be whole rows of k = {k}",
        x.len(),
        w.len()
    );
    let (m, n) = (x.len() / k, w.len() / k);
    assert_eq!(
        y.len(),
        m * n,
        "linear: y has {} values for [{m}, {n}]",
        y.len()
    );
    if let Some(b) = bias {
        assert_eq!(
            b.len(),
            n,
            "linear: bias has {} values for {n} outputs",
            b.len()
        );
    }
    matmul(
        y,
        View::row_major(x, m, k),
        View::row_major(w, n, k).t(),
        1.0,
        m * n * k > 64 * 64 * 64,
    );
    if let Some(b) = bias {
        add_bias(y, b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "linear: y has 5 values for [2, 3]")]
    fn linear_rejects_a_short_output() {
        let (x, w) = (vec![1.0; 2 * 4], vec![1.0; 3 * 4]);
        linear(&x, &w, None, 4, &mut [0.0; 5]);
    }

    #[test]
    #[should_panic(expected = "linear: x (7) and w (12) must be whole rows of k = 4")]
    fn linear_rejects_a_ragged_input() {
        linear(&[1.0; 7], &[1.0; 12], None, 4, &mut [0.0; 3]);
    }

    #[test]
    fn linear_matches_a_naive_loop() {
        let (m, n, k) = (3, 5, 7);
        let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.11).cos()).collect();
        let b: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let mut y = vec![f32::NAN; m * n];
        linear(&x, &w, Some(&b), k, &mut y);
        for i in 0..m {
            for j in 0..n {
                let want: f64 = (0..k)
                    .map(|p| x[i * k + p] as f64 * w[j * k + p] as f64)
                    .sum::<f64>()
                    + b[j] as f64;
                assert!((y[i * n + j] as f64 - want).abs() < 1e-5, "[{i}, {j}]");
            }
        }
    }

    #[test]
    #[should_panic(expected = "does not fit in 10 values")]
    fn a_strided_view_past_the_end_is_refused() {
        let data = [1.0f32; 10];
        let a = View {
            data: &data,
            offset: 4,
            rows: 2,
            cols: 2,
            row_stride: 5,
            col_stride: 1,
        };
        matmul(
            &mut [0.0; 4],
            a,
            View::row_major(&data[..4], 2, 2),
            1.0,
            false,
        );
    }

    #[test]
    fn erf_matches_f64_series() {
        let mut worst = 0f64;
        for i in -100_000..=100_000 {
            let x = i as f32 * 1e-4;
            worst = worst.max((erf(x) as f64 - erf_f64(x as f64)).abs());
        }
        assert!(worst < 1e-7, "max |erff - erf| = {worst:e}");
    }
}

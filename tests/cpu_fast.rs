//! The fast CPU path (AVX-512 tiles, f32 and bf16) against the plain `ops`
//! reference: each piece alone, then whole models, then the promises the
//! server and the Python package rely on (batch and thread independence).
//! On a CPU without AVX-512 these tests fail rather than pass: the fast path
//! is what they are about.

mod common;

use bertrt::backend::cpu::fast::{self, GemmPath};
use bertrt::backend::cpu::packed::{ATiles, PackedLinear};
use bertrt::backend::cpu::{amx, amx_attention, ops, simd, CpuEngine};
use bertrt::batch::{Batch, SequenceIds};
use bertrt::rng::Rng;
use bertrt::Dtype;
use common::fp16::{awkward_sequences, cosine, weights};

fn randn(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.unit()).collect()
}

fn bf16_round(x: f32) -> f64 {
    half::bf16::from_f32(x).to_f64()
}

/// `got == want` bit for bit; else how many of the values (rows of
/// `width`) differ and where the first is.
fn assert_same<T: PartialEq + std::fmt::Debug>(got: &[T], want: &[T], width: usize, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let differ: Vec<usize> = (0..got.len()).filter(|&j| got[j] != want[j]).collect();
    if let Some(&j) = differ.first() {
        panic!(
            "{what}: {} of {} values differ; first [{}, {}]: {:?} vs {:?}",
            differ.len(),
            got.len(),
            j / width,
            j % width,
            got[j],
            want[j]
        );
    }
}

/// y = act(x W^T + b) by an f64 triple loop, inputs optionally rounded to
/// bf16, with sum |x w| + |b| per element (what f32 rounding scales with).
fn linear_f64(
    x: &[f32],
    w: &[f32],
    b: &[f32],
    k: usize,
    gelu: bool,
    bf16: bool,
) -> (Vec<f64>, Vec<f64>) {
    let r = |v: f32| if bf16 { bf16_round(v) } else { v as f64 };
    let (m, n) = (x.len() / k, w.len() / k);
    let (mut y, mut mag) = (vec![0f64; m * n], vec![0f64; m * n]);
    for i in 0..m {
        for j in 0..n {
            let s: f64 = (0..k)
                .map(|t| r(x[i * k + t]) * r(w[j * k + t]))
                .sum::<f64>()
                + b[j] as f64;
            mag[i * n + j] = (0..k)
                .map(|t| (r(x[i * k + t]) * r(w[j * k + t])).abs())
                .sum::<f64>()
                + b[j].abs() as f64;
            y[i * n + j] = if gelu {
                0.5 * s * (1.0 + ops::erf_f64(s / 2f64.sqrt()))
            } else {
                s
            };
        }
    }
    (y, mag)
}

#[test]
fn the_tiles_equal_an_f64_product_at_every_edge() {
    let f = simd::features();
    assert!(
        f.avx512,
        "this test is about the AVX-512 path; the CPU has none"
    );
    let mut rng = Rng::new(7);
    // Shapes crossing every boundary: rows around the tile heights (8, 12),
    // columns around panel widths (32, 48), K around AMX's 256 block, K
    // past the FMA tiles' 4096 block, and odd K (a bf16 pair padded).
    // (40, 96, 64), (33, 768, 96) and (64, 384, 32) fit AMX tiles.
    let shapes = [
        (1, 1, 1),
        (7, 13, 33),
        (13, 47, 31),
        (25, 255, 49),
        (12, 257, 96),
        (40, 600, 100),
        (9, 768, 64),
        (40, 96, 64),
        (33, 768, 96),
        (64, 384, 32),
        (9, 4100, 40),
    ];
    for &(m, k, n) in &shapes {
        for path in [
            GemmPath::Avx512F32,
            GemmPath::Avx512Bf16,
            GemmPath::Avx512Dpbf16,
            GemmPath::AmxBf16,
        ] {
            let (bf16, amx) = (path.is_bf16(), path == GemmPath::AmxBf16);
            if bf16 && !f.avx512_bf16 {
                panic!("the CPU has no AVX512-BF16: the bf16 tiles are untested here");
            }
            for gelu in [false, true] {
                let x = randn(&mut rng, m * k);
                let w = randn(&mut rng, n * k);
                let b = randn(&mut rng, n);
                let (want, mag) = linear_f64(&x, &w, &b, k, gelu, bf16);
                let mut got = vec![0f32; m * n];
                let p = PackedLinear::new(&w, &b, n, k, path);
                // The three AMX shapes must really run on the tiles, and
                // every even K on vdpbf16ps where that was asked for.
                let fits = n % 32 == 0 && k % 32 == 0;
                assert_eq!(
                    p.on_amx(),
                    amx && fits && amx::available(),
                    "m{m} k{k} n{n}: AMX path"
                );
                assert_eq!(
                    p.on_dot(),
                    path == GemmPath::Avx512Dpbf16 && k % 2 == 0,
                    "m{m} k{k} n{n}: vdpbf16ps path"
                );
                p.forward(&x, gelu, &mut got);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    // f32 accumulation rounds k times: 8 standard deviations
                    // of that random walk, sqrt(k) 2^-24 sum |x w|. A wrong
                    // lane or element is off by a whole product (about 0.25).
                    let tol = 8.0 * ((k + 1) as f64).sqrt() * 6e-8 * mag[i] + 1e-6;
                    assert!(
                        (*g as f64 - w).abs() <= tol,
                        "m{m} k{k} n{n} {path} gelu={gelu}: [{}, {}] = {g}, want {w} (seed 7)",
                        i / n,
                        i % n
                    );
                }
            }
        }
    }
}

#[test]
#[cfg_attr(not(host_amx), ignore = "this CPU reports no AMX (amx_tile, amx_bf16)")]
fn the_amx_ffn_through_tiles_equals_the_ffn_through_f32_rows() {
    if !amx::available() {
        panic!("the CPU has no AMX: the fused AMX FFN is untested here");
    }
    let mut rng = Rng::new(11);
    // 45 rows: a padded 32-row block; K blocks of 768 and 3072.
    let (m, h, i) = (45, 768, 3072);
    let x = randn(&mut rng, m * h);
    let (w1, b1) = (randn(&mut rng, i * h), randn(&mut rng, i));
    let (w2, b2) = (randn(&mut rng, h * i), randn(&mut rng, h));
    let up = PackedLinear::new(&w1, &b1, i, h, GemmPath::AmxBf16);
    let down = PackedLinear::new(&w2, &b2, h, i, GemmPath::AmxBf16);
    assert!(up.on_amx() && down.on_amx());
    let mut u = vec![0f32; m * i];
    let mut want = vec![0f32; m * h];
    up.forward(&x, true, &mut u);
    down.forward(&u, false, &mut want);
    // The same GELU on the same values, rounded to bf16 once either way.
    let (mut a, mut mid) = (ATiles::default(), ATiles::default());
    a.fill(&x, h);
    up.forward_tiles_to_tiles(&a, true, &mut mid);
    let mut got = vec![0f32; m * h];
    down.forward_tiles(&mid, false, &mut got);
    assert_same(&got, &want, h, "FFN outputs (seed 11)");
}

#[test]
#[cfg_attr(not(host_amx), ignore = "this CPU reports no AMX (amx_tile, amx_bf16)")]
fn the_amx_linear_to_bf16_pairs_equals_its_f32_rows_rounded() {
    if !amx::available() {
        panic!("the CPU has no AMX: the AMX pairs output is untested here");
    }
    let mut rng = Rng::new(13);
    // 45 rows: a padded 32-row block; N of a QKV projection.
    let (m, k, n) = (45, 256, 384);
    let x = randn(&mut rng, m * k);
    let (w, b) = (randn(&mut rng, n * k), randn(&mut rng, n));
    let lin = PackedLinear::new(&w, &b, n, k, GemmPath::AmxBf16);
    let mut rows = vec![0f32; m * n];
    lin.forward(&x, false, &mut rows);
    let mut want = vec![0u32; m * n / 2];
    simd::to_bf16_pairs(&rows, n, &mut want);
    let mut a = ATiles::default();
    a.fill(&x, k);
    let mut got = Vec::new();
    lin.forward_tiles_to_pairs(&a, &mut got);
    assert!(got.len() >= want.len());
    assert_same(&got[..want.len()], &want, n / 2, "bf16 pairs (seed 13)");
}

#[test]
#[cfg_attr(
    not(host_bf16),
    ignore = "this CPU reports no AVX512-BF16 (avx512_bf16)"
)]
fn rows_to_pairs_equals_bias_gelu_then_rounding_and_checks_where_it_writes() {
    let mut rng = Rng::new(17);
    let (rows, w) = (5, 64);
    let x = randn(&mut rng, rows * w);
    let bias = randn(&mut rng, w);
    // Rows written in reverse order, 8 u32 apart beyond their 32 pairs.
    let at = |r: usize, j: usize| (rows - 1 - r) * (w / 2 + 8) + j;
    let mut got = vec![7u32; rows * (w / 2 + 8)];
    simd::rows_to_pairs(&x, w, 1..rows, Some(&bias), &mut got, at);
    let mut want_rows = x.clone();
    simd::bias_gelu_block(&mut want_rows, 0, w, rows, w, &bias, true);
    for r in 0..rows {
        let mut want = vec![7u32; w / 2];
        if r > 0 {
            simd::to_bf16_pairs(&want_rows[r * w..][..w], w, &mut want);
        }
        assert_eq!(&got[at(r, 0)..][..w / 2], &want[..], "row {r}");
        assert!(
            got[at(r, 0) + w / 2..][..8].iter().all(|&g| g == 7),
            "row {r}: past its pairs"
        );
    }
    // An index past the end panics instead of writing there.
    let short = std::panic::catch_unwind(|| {
        let mut d = vec![0u32; w / 2 + 8];
        simd::rows_to_pairs(&x, w, 0..2, None, &mut d, |r, j| r * 20 + j);
    });
    assert!(short.is_err(), "rows_to_pairs wrote past its destination");
}

#[test]
fn vector_gelu_is_as_close_to_exact_as_a_correctly_rounded_erf() {
    let mut x: Vec<f32> = (0..400_001)
        .map(|i| -12.0 + 24.0 * i as f32 / 400_000.0)
        .collect();
    let exact: Vec<f64> = x
        .iter()
        .map(|&v| 0.5 * v as f64 * (1.0 + ops::erf_f64(v as f64 / 2f64.sqrt())))
        .collect();
    simd::gelu_slice(&mut x);
    let worst = x
        .iter()
        .zip(&exact)
        .map(|(g, e)| (*g as f64 - e).abs())
        .fold(0.0, f64::max);
    // 2.5e-7 measured (the table of quartics; the erfc form before it had
    // 3.9e-7); a GELU from a correctly rounded erff has 4.5e-7 here.
    assert!(
        worst <= 3e-7,
        "vector GELU max |err| {worst:e} on [-12, 12]"
    );
}

#[test]
fn softmax_and_layernorm_equal_the_reference() {
    let mut rng = Rng::new(11);
    for len in [1, 5, 16, 17, 100, 513] {
        let s = randn(&mut rng, len)
            .iter()
            .map(|v| v * 20.0)
            .collect::<Vec<_>>();
        let mut got = s.clone();
        simd::softmax_scaled(&mut got, 0.125);
        let m = s.iter().fold(f64::MIN, |m, &v| m.max(v as f64 * 0.125));
        let e: Vec<f64> = s.iter().map(|&v| (v as f64 * 0.125 - m).exp()).collect();
        let z: f64 = e.iter().sum();
        for (g, e) in got.iter().zip(&e) {
            assert!(
                (*g as f64 - e / z).abs() <= 1e-7,
                "softmax len {len}: {g} vs {}",
                e / z
            );
        }
    }
    for w in [8, 32, 37, 384, 768, 1000] {
        let x = randn(&mut rng, w);
        let r = randn(&mut rng, w);
        let g = randn(&mut rng, w);
        let b = randn(&mut rng, w);
        let mut want = x.clone();
        ops::add_bias_residual_layernorm(&mut want, &vec![0.0; w], &r, &g, &b, 1e-12);
        let mut got = x.clone();
        simd::residual_layernorm(&mut got, None, Some(&r), &g, &b, 1e-12);
        for (i, (a, e)) in got.iter().zip(&want).enumerate() {
            assert!(
                (a - e).abs() <= 2e-6,
                "layernorm width {w} [{i}]: {a} vs {e}"
            );
        }
    }
}

#[test]
fn tiled_attention_equals_the_reference() {
    let mut rng = Rng::new(5);
    for (heads, d, lens) in [
        (2, 64, vec![1, 7, 16, 17, 63, 64, 65, 128, 129, 384]),
        (3, 32, vec![1, 17, 100, 512]),
        (4, 8, vec![2, 9, 33]),
    ] {
        let h = heads * d;
        let mut cu = vec![0];
        for l in &lens {
            cu.push(cu.last().unwrap() + l);
        }
        let t = *cu.last().unwrap();
        let qkv = randn(&mut rng, t * 3 * h);
        let mut want = vec![0f32; t * h];
        ops::attention_packed(&qkv, &cu, heads, d, &mut want);
        let mut got = vec![0f32; t * h];
        fast::attention(&qkv, &cu, heads, d, &mut got);
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        // Both sides round scores of up to 8 in f32 (about 5e-7 each).
        assert!(
            worst <= 5e-6,
            "attention d{d} lengths {lens:?}: max |err| {worst:e} (seed 5)"
        );
    }
}

#[test]
#[cfg_attr(not(host_amx), ignore = "this CPU reports no AMX (amx_tile, amx_bf16)")]
fn amx_attention_equals_an_f64_attention_on_its_bf16_inputs() {
    if !amx::available() {
        panic!("the CPU has no AMX: the AMX attention is untested here");
    }
    let mut rng = Rng::new(9);
    for (heads, d, lens) in [
        (
            2,
            64,
            vec![1, 7, 16, 17, 31, 32, 33, 63, 64, 65, 128, 129, 384],
        ),
        (3, 32, vec![1, 5, 20, 100, 512]),
        (1, 128, vec![3, 40, 96]),
    ] {
        let h = heads * d;
        let mut cu = vec![0];
        for l in &lens {
            cu.push(cu.last().unwrap() + l);
        }
        let t = *cu.last().unwrap();
        // Scores of several units, so softmax is peaked and a wrong key or
        // lane moves an output by about a whole value.
        let qkv: Vec<f32> = randn(&mut rng, t * 3 * h).iter().map(|v| 3.0 * v).collect();
        let mut got = vec![0f32; t * h];
        amx_attention::attention(&qkv, &cu, heads, d, &mut got);
        let scale = 1.0 / (d as f64).sqrt();
        let at = |i: usize, part: usize, hd: usize, c: usize| {
            bf16_round(qkv[i * 3 * h + part * h + hd * d + c])
        };
        let mut worst = 0f64;
        let mut vmax = 0f64;
        for w in cu.windows(2) {
            for hd in 0..heads {
                for i in w[0]..w[1] {
                    let s: Vec<f64> = (w[0]..w[1])
                        .map(|j| {
                            scale
                                * (0..d)
                                    .map(|c| at(i, 0, hd, c) * at(j, 1, hd, c))
                                    .sum::<f64>()
                        })
                        .collect();
                    let m = s.iter().cloned().fold(f64::MIN, f64::max);
                    let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for c in 0..d {
                        let want: f64 = (w[0]..w[1])
                            .map(|j| e[j - w[0]] / z * at(j, 2, hd, c))
                            .sum();
                        vmax = (w[0]..w[1])
                            .map(|j| at(j, 2, hd, c).abs())
                            .fold(vmax, f64::max);
                        worst = worst.max((got[i * h + hd * d + c] as f64 - want).abs());
                    }
                }
            }
        }
        // P is rounded to bf16 (relative 2^-9 per entry), so an output moves
        // by at most 2^-9 max|v| (sum P = 1), doubled for the f32 softmax;
        // seen: 6.7e-3 to 7.3e-3 against 1.2e-2.
        let tol = 2.0 * vmax / 512.0;
        assert!(
            worst <= tol,
            "AMX attention d{d} lengths {lens:?}: max |err| {worst:e} > {tol:e} (seed 9)"
        );
    }
}

/// The fixtures' heads are 8 wide, so the engine-level independence test
/// below never reaches the AMX attention; this holds it to the same rule.
#[test]
#[cfg_attr(not(host_amx), ignore = "this CPU reports no AMX (amx_tile, amx_bf16)")]
fn amx_attention_of_a_sequence_does_not_depend_on_its_batch_or_threads() {
    if !amx::available() {
        panic!("the CPU has no AMX: the AMX attention is untested here");
    }
    let mut rng = Rng::new(21);
    let (heads, d) = (2, 64);
    let lens = [5, 33, 64, 100];
    let h = heads * d;
    let mut cu = vec![0];
    for l in &lens {
        cu.push(cu.last().unwrap() + l);
    }
    let t = *cu.last().unwrap();
    let qkv = randn(&mut rng, t * 3 * h);
    let run = |threads: usize, qkv: &[f32], cu: &[usize]| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut out = vec![0f32; cu.last().unwrap() * h];
        pool.install(|| amx_attention::attention(qkv, cu, heads, d, &mut out));
        out
    };
    let batch1 = run(1, &qkv, &cu);
    let batch2 = run(2, &qkv, &cu);
    assert!(batch1 == batch2, "AMX attention: 1 and 2 threads differ");
    for (s, w) in cu.windows(2).enumerate() {
        let alone = run(2, &qkv[w[0] * 3 * h..w[1] * 3 * h], &[0, w[1] - w[0]]);
        let what = format!(
            "AMX attention, sequence {s} (length {}) alone vs in the batch",
            lens[s]
        );
        assert_same(&alone, &batch2[w[0] * h..w[1] * h], h, &what);
    }
}

fn engine(dir: &str, dtype: Dtype, threads: usize) -> CpuEngine {
    CpuEngine::with_options(weights(&common::model_dir(dir)), dtype, Some(threads)).unwrap()
}

#[test]
fn fast_f32_models_equal_the_reference_engine() {
    common::for_each_fixture_model(|name| {
        let w = weights(&common::model_dir(name));
        let cfg = w.config.clone();
        let batch = Batch::pack(&awkward_sequences(&cfg), &cfg).unwrap();
        let want = CpuEngine::reference(w.clone()).forward(&batch).unwrap();
        let fast = CpuEngine::with_options(w, Dtype::F32, Some(2)).unwrap();
        assert_eq!(fast.path(), GemmPath::Avx512F32, "{name}");
        let got = fast.forward(&batch).unwrap();
        let worst = got
            .hidden
            .iter()
            .zip(&want.hidden)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= 1e-5,
            "{name}: fast f32 hidden states differ from the reference by {worst:e}"
        );
    });
}

/// The bf16 path this CPU should take: AMX where /proc/cpuinfo reports it
/// (`cfg(host_amx)`, read by build.rs), else the `vdpbf16ps` tiles on AMD
/// (`cfg(host_amd)`), else the widened AVX512-BF16 tiles.
fn bf16_path_here() -> GemmPath {
    if cfg!(host_amx) {
        GemmPath::AmxBf16
    } else if cfg!(host_amd) {
        GemmPath::Avx512Dpbf16
    } else {
        GemmPath::Avx512Bf16
    }
}

#[test]
fn amx_is_used_exactly_where_the_cpu_reports_it() {
    assert_eq!(amx::available(), cfg!(host_amx));
    let bf = engine("bert_mlm", Dtype::Bf16, 2);
    assert_eq!(
        bf.path(),
        bf16_path_here(),
        "dtype bf16 took the wrong path"
    );
}

#[test]
fn bf16_embeddings_agree_with_f32_on_every_fixture() {
    // Every bf16 path this CPU runs: both AVX512-BF16 tiles also where
    // another is the default, as other CPUs (and VMs that hide AMX) run them.
    let mut paths = vec![GemmPath::Avx512Bf16, GemmPath::Avx512Dpbf16];
    if bf16_path_here() == GemmPath::AmxBf16 {
        paths.push(GemmPath::AmxBf16);
    }
    common::for_each_fixture_model(|name| {
        let f32e = engine(name, Dtype::F32, 2);
        let cfg = f32e.weights.config.clone();
        let batch = Batch::pack(&awkward_sequences(&cfg), &cfg).unwrap();
        let a = f32e.encode(&batch);
        for &path in &paths {
            let w = weights(&common::model_dir(name));
            let b = CpuEngine::with_path(w, path, Some(2))
                .unwrap()
                .encode(&batch);
            let h = cfg.hidden_size;
            for (s, w) in batch.cu_seqlens().windows(2).enumerate() {
                // Mean-pooled sequence embedding, as the embed task makes.
                let pool = |x: &[f32]| -> Vec<f32> {
                    (0..h)
                        .map(|j| {
                            (w[0]..w[1]).map(|t| x[t * h + j]).sum::<f32>() / (w[1] - w[0]) as f32
                        })
                        .collect()
                };
                let c = cosine(&pool(&a), &pool(&b));
                assert!(
                    c >= 0.9995,
                    "{name} {path} sequence {s}: cosine(f32, bf16) = {c}"
                );
            }
        }
    });
}

#[test]
fn a_sequence_does_not_depend_on_its_batch_or_the_thread_count() {
    for name in ["bert_mlm", "albert_share_attention", "roberta_mlm"] {
        let mut paths = vec![
            GemmPath::Avx512F32,
            GemmPath::Avx512Bf16,
            GemmPath::Avx512Dpbf16,
        ];
        if bf16_path_here() == GemmPath::AmxBf16 {
            paths.push(GemmPath::AmxBf16);
        }
        for path in paths {
            let on = |n| CpuEngine::with_path(weights(&common::model_dir(name)), path, Some(n));
            let (one, two) = (on(1).unwrap(), on(2).unwrap());
            let cfg = one.weights.config.clone();
            let seqs = awkward_sequences(&cfg);
            let h = cfg.hidden_size;
            let alone: Vec<Vec<f32>> = seqs
                .iter()
                .map(|s| one.encode(&Batch::pack(std::slice::from_ref(s), &cfg).unwrap()))
                .collect();
            // The whole batch, reversed, and each sequence between two others.
            let mut orders: Vec<Vec<usize>> =
                vec![(0..seqs.len()).collect(), (0..seqs.len()).rev().collect()];
            for i in 0..seqs.len() {
                orders.push(vec![(i + 1) % seqs.len(), i, (i + 2) % seqs.len()]);
            }
            for (eng, threads) in [(&one, 1), (&two, 2)] {
                for order in &orders {
                    let batch_seqs: Vec<SequenceIds> =
                        order.iter().map(|&i| seqs[i].clone()).collect();
                    let batch = Batch::pack(&batch_seqs, &cfg).unwrap();
                    let out = eng.encode(&batch);
                    for (pos, &i) in order.iter().enumerate() {
                        let (a, b) = (batch.cu_seqlens()[pos], batch.cu_seqlens()[pos + 1]);
                        let got = &out[a * h..b * h];
                        let worst = got
                            .iter()
                            .zip(&alone[i])
                            .map(|(x, y)| (x - y).abs())
                            .fold(0f32, f32::max);
                        assert!(
                            worst <= 1e-6,
                            "{name} {path} threads {threads}: sequence {i} in batch {order:?} differs from alone by {worst:e}"
                        );
                    }
                }
            }
        }
    }
}

/// bf16 packs each encoder linear as it is read and drops its f32 at once
/// (`fast::Prepacked`), so loading peaks below f32 loading by most of the
/// encoder's f32 bytes. The model: random weights for a config whose
/// encoder (8 layers, H 512, I 2048: 25.2 M weights, 96 MiB in f32) dwarfs
/// its embeddings. Measured: f32 113 MiB, bf16 66 MiB; planted (no packing
/// while loading, the old way) bf16 108 MiB.
#[test]
fn bf16_loading_never_holds_the_whole_encoder_in_f32() {
    let dir = std::env::temp_dir().join(format!("bertrt-rss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::model_dir("bert_cls").join("config.json")).unwrap(),
    )
    .unwrap();
    for (k, v) in [
        ("hidden_size", 512),
        ("intermediate_size", 2048),
        ("num_hidden_layers", 8),
        ("num_attention_heads", 8),
        ("vocab_size", 512),
    ] {
        cfg[k] = v.into();
    }
    let cfg_path = dir.join("config.json");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let load_peak = |dtype: &str| -> (f64, String) {
        let cfg = cfg_path.to_str().unwrap();
        let v = common::bertrt_json(&[
            "bench", "--device", "cpu", "--batch", "1", "--seq", "8", "--iters", "1", "--warmup",
            "0", "--format", "json", "--dtype", dtype, "--model", cfg,
        ]);
        let peak = v["load_peak_rss_mib"].as_f64();
        (
            peak.unwrap_or_else(|| panic!("no load_peak_rss_mib in {v}")),
            v["backend"].to_string(),
        )
    };
    let ((f32_peak, _), (bf16_peak, backend)) = (load_peak("f32"), load_peak("bf16"));
    std::fs::remove_dir_all(&dir).ok();
    let encoder_f32_mib = (8 * (4 * 512 * 512 + 2 * 512 * 2048) * 4) as f64 / (1 << 20) as f64;
    assert!(
        GemmPath::Avx512Bf16.runs_here(),
        "this test needs a bf16 path (AVX512-BF16); bf16 here ran on {backend}"
    );
    assert!(
        bf16_peak + 0.3 * encoder_f32_mib <= f32_peak,
        "loading peaked at {bf16_peak} MiB in bf16 against {f32_peak} MiB in f32 \
         ({backend}): the encoder's {encoder_f32_mib:.0} MiB of f32 were held at once"
    );
}

/// An engine loaded with `--dtype bf16` (its linears packed as the files
/// are read, each by its place in the encoder) computes bit for bit what an
/// engine packing the same weights after loading computes, on every fixture:
/// ALBERT's shared blocks and its embedding projection included. Planted
/// (the FFN blocks' indices off by one): fails on the first model with two
/// FFN blocks.
#[test]
fn weights_packed_while_loading_equal_weights_packed_after() {
    let opts = bertrt::LoadOptions {
        device: bertrt::Device::Cpu,
        dtype: Some(Dtype::Bf16),
        threads: Some(2),
        ..Default::default()
    };
    common::for_each_fixture_model(|name| {
        let dir = common::model_dir(name);
        let loaded = bertrt::Engine::load_dir_with(&dir, &opts).unwrap();
        let after = CpuEngine::with_options(weights(&dir), Dtype::Bf16, Some(2)).unwrap();
        let cfg = after.weights.config.clone();
        let batch = Batch::pack(&awkward_sequences(&cfg), &cfg).unwrap();
        let got = loaded.forward(&batch).unwrap().hidden;
        assert_same(&got, &after.encode(&batch), cfg.hidden_size, name);
    });
}

//! Per-op CPU benchmarks at BERT-base shapes (batch 8 x seq 128 = 1024 tokens,
//! H 768, 12 heads, I 3072): the f32 reference ops the CPU engine is built from.
//!
//! Criterion's "elements" are FLOPs for the GEMMs and attention (so
//! `Gelem/s` reads as GFLOP/s) and its bytes are the minimum memory traffic
//! for the element-wise ops (GB/s). Measurement time is kept short so
//! `cargo bench` finishes in a few minutes on 2 cores.

use bertrt::backend::cpu::packed::PackedLinear;
use bertrt::backend::cpu::{amx, fast, ops, simd};
use bertrt::config::Activation;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use std::time::Duration;

const TOKENS: usize = 8 * 128;
const SEQ: usize = 128;
const H: usize = 768;
const HEADS: usize = 12;
const I: usize = 3072;

fn data(n: usize, seed: u32) -> Vec<f32> {
    // Small deterministic values in [-0.5, 0.5).
    (0..n as u32)
        .map(|i| {
            ((i.wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / (1u32 << 24) as f32)
                - 0.5
        })
        .collect()
}

/// (name, n = out, k = in): the four GEMMs of a BERT-base layer.
const LINEARS: [(&str, usize, usize); 4] = [
    ("qkv", 3 * H, H),
    ("attn_out", H, H),
    ("ffn_up", I, H),
    ("ffn_down", H, I),
];

fn linear(c: &mut Criterion) {
    let mut g = c.benchmark_group("linear (elements = FLOPs)");
    for (name, n, k) in LINEARS {
        let x = data(TOKENS * k, 1);
        let w = data(n * k, 2);
        let b = data(n, 3);
        let mut y = vec![0f32; TOKENS * n];
        g.throughput(Throughput::Elements((2 * TOKENS * n * k) as u64));
        g.bench_function(format!("{name} m{TOKENS} n{n} k{k}"), |bch| {
            bch.iter(|| ops::linear(black_box(&x), &w, Some(&b), k, &mut y))
        });
        for (dtype, path) in [
            ("f32 tiles", fast::GemmPath::Avx512F32),
            ("bf16 tiles", fast::choose_path(true).0),
        ] {
            let p = PackedLinear::new(&w, &b, n, k, path);
            g.bench_function(format!("{name} m{TOKENS} n{n} k{k} {dtype}"), |bch| {
                bch.iter(|| p.forward(black_box(&x), false, &mut y))
            });
        }
    }
    g.finish();
    peak_fractions();
}

/// The f32 tiles' GFLOP/s as a fraction of this CPU's f32 FMA peak, the peak
/// measured here (every rayon thread running 24 FMA chains: the sustained
/// clock times 2 FMA ports x 16 lanes x 2 flops), not read from a data sheet.
/// Where the CPU has AMX, also the bf16 linears and one `amx::Tiles::block`
/// whose A and B stay in L1, against AMX's nominal 1024 bf16 flops per cycle
/// per core at that clock: VMs differ widely there (docs/perf/cpu.md), and
/// this tells a slow tile unit from slow code.
fn peak_fractions() {
    if !simd::features().avx512 {
        eprintln!("peak fraction: no AVX-512 on this CPU, the tiles do not run here");
        return;
    }
    let peak: f64 = rayon::broadcast(|_| simd::fma_peak_gflops(20_000_000))
        .iter()
        .sum();
    eprintln!(
        "f32 FMA peak, measured on {} threads: {peak:.0} GFLOP/s",
        rayon::current_num_threads()
    );
    let amx_peak = amx::available().then_some(peak * 1024.0 / 64.0);
    match amx_peak {
        Some(amx_peak) => amx_block_fraction(amx_peak),
        None => eprintln!("AMX fraction: no AMX on this CPU (or the OS refused the tile state)"),
    }
    for (name, n, k) in LINEARS {
        let (x, w, b) = (data(TOKENS * k, 1), data(n * k, 2), data(n, 3));
        let mut y = vec![0f32; TOKENS * n];
        let flops = 2 * TOKENS * n * k;
        let p = PackedLinear::new(&w, &b, n, k, fast::GemmPath::Avx512F32);
        let gflops = best_gflops(flops, || p.forward(black_box(&x), false, &mut y));
        eprintln!(
            "{name} f32 tiles: {gflops:.0} GFLOP/s = {:.0}% of the f32 FMA peak",
            100.0 * gflops / peak
        );
        if simd::features().bf16_dot_at_fma_rate {
            // Two flops per lane of each vdpbf16ps pair: twice the f32 peak.
            let p = PackedLinear::new(&w, &b, n, k, fast::GemmPath::Avx512Dpbf16);
            let gflops = best_gflops(flops, || p.forward(black_box(&x), false, &mut y));
            eprintln!(
                "{name} vdpbf16ps bf16: {gflops:.0} GFLOP/s = {:.0}% of twice the f32 FMA peak",
                50.0 * gflops / peak
            );
        }
        if let Some(amx_peak) = amx_peak {
            let p = PackedLinear::new(&w, &b, n, k, fast::GemmPath::AmxBf16);
            assert!(p.on_amx(), "{name}: the bf16 linear is not on AMX");
            let gflops = best_gflops(flops, || p.forward(black_box(&x), false, &mut y));
            eprintln!(
                "{name} AMX bf16: {gflops:.0} GFLOP/s = {:.0}% of the AMX peak",
                100.0 * gflops / amx_peak
            );
        }
    }
}

/// GFLOP/s of the fastest of 5 calls of `f` (after one untimed call).
fn best_gflops(flops: usize, mut f: impl FnMut()) -> f64 {
    f();
    let best = (0..5)
        .map(|_| {
            let t = std::time::Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min);
    flops as f64 / best / 1e9
}

/// Prints the AMX peak and one in-L1 block's share of it, on every thread
/// at once.
fn amx_block_fraction(peak: f64) {
    eprintln!("AMX bf16 nominal peak at that clock: {peak:.0} GFLOP/s");
    // K = 256: A and B are 16 KiB each; 1.0 in every bf16.
    let k = 256;
    let ones = vec![0x3f80_3f80u32; k / 32 * amx::STEP];
    let reps = 20_000;
    let block: f64 = rayon::broadcast(|_| {
        let tiles = amx::Tiles::configure();
        let mut c = vec![0f32; 32 * 32];
        tiles.block(&ones, &[&ones], None, &mut c, 0, 32);
        let t = std::time::Instant::now();
        for _ in 0..reps {
            tiles.block(black_box(&ones), &[&ones], None, &mut c, 0, 32);
        }
        (2 * 32 * 32 * k * reps) as f64 / t.elapsed().as_secs_f64() / 1e9
    })
    .iter()
    .sum();
    eprintln!(
        "AMX block, A and B in L1: {block:.0} GFLOP/s = {:.0}% of the AMX peak",
        100.0 * block / peak
    );
}

fn attention(c: &mut Criterion) {
    let mut g = c.benchmark_group("attention_packed (elements = FLOPs)");
    let qkv = data(TOKENS * 3 * H, 4);
    let mut out = vec![0f32; TOKENS * H];
    for (label, lens) in [("b8 s128 fixed", vec![SEQ; 8]), ("b1 s512", vec![512])] {
        let cu: Vec<usize> = std::iter::once(0)
            .chain(lens.iter().scan(0, |a, &l| {
                *a += l;
                Some(*a)
            }))
            .collect();
        let t = *cu.last().unwrap();
        // QK^T and PV: 2 * 2 * len^2 * H per sequence.
        let flops: usize = lens.iter().map(|&l| 4 * l * l * H).sum();
        g.throughput(Throughput::Elements(flops as u64));
        type Attention = fn(&[f32], &[usize], usize, usize, &mut [f32]);
        let kinds: [(&str, Attention); 2] =
            [("", ops::attention_packed), (" tiles", fast::attention)];
        for (kind, attend) in kinds {
            g.bench_function(format!("{label}{kind}"), |bch| {
                bch.iter(|| {
                    attend(
                        black_box(&qkv[..t * 3 * H]),
                        &cu,
                        HEADS,
                        H / HEADS,
                        &mut out[..t * H],
                    )
                })
            });
        }
    }
    g.finish();
}

fn elementwise(c: &mut Criterion) {
    let mut g = c.benchmark_group("elementwise (bytes = min traffic)");
    let res = data(TOKENS * H, 5);
    let bias = data(H, 6);
    let gamma = vec![1f32; H];
    let beta = vec![0f32; H];
    let mut x = data(TOKENS * H, 7);
    // read x, residual; write x
    g.throughput(Throughput::Bytes((3 * TOKENS * H * 4) as u64));
    g.bench_function(format!("add_bias_residual_layernorm {TOKENS}x{H}"), |bch| {
        bch.iter(|| {
            ops::add_bias_residual_layernorm(&mut x, &bias, black_box(&res), &gamma, &beta, 1e-12)
        })
    });

    let mut u = data(TOKENS * I, 8);
    let bi = data(I, 9);
    // read + write u
    g.throughput(Throughput::Bytes((2 * TOKENS * I * 4) as u64));
    for (name, a) in [
        ("gelu", Activation::Gelu),
        ("gelu_tanh", Activation::GeluTanh),
    ] {
        g.bench_function(format!("bias_act {name} {TOKENS}x{I}"), |bch| {
            // In place and repeated: values drift by the bias each run, which
            // stays finite and does not change the work done.
            bch.iter(|| ops::bias_act(&mut u, &bi, a))
        });
    }

    let vocab = 30522;
    let word = data(vocab * H, 10);
    let pos = data(512 * H, 11);
    let ty = data(2 * H, 12);
    let ids: Vec<u32> = (0..TOKENS as u32)
        .map(|i| i.wrapping_mul(7919) % vocab as u32)
        .collect();
    let pos_ids: Vec<u32> = (0..TOKENS as u32).map(|i| i % SEQ as u32).collect();
    let type_ids = vec![0u32; TOKENS];
    let mut out = vec![0f32; TOKENS * H];
    // three table rows read, one row written per token
    g.throughput(Throughput::Bytes((4 * TOKENS * H * 4) as u64));
    g.bench_function(format!("embeddings {TOKENS}x{H}"), |bch| {
        bch.iter(|| {
            ops::embeddings(
                &word,
                &pos,
                &ty,
                black_box(&ids),
                &pos_ids,
                &type_ids,
                &gamma,
                &beta,
                1e-12,
                &mut out,
            )
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! { name = benches; config = config(); targets = linear, attention, elementwise }
criterion_main!(benches);

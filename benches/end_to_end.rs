//! End-to-end CPU forwards with random weights (bertrt::model::random_weights):
//! a tiny model and the bert-base preset at batch 8 x seq 128, fixed lengths.
//! Criterion's "elements" are sequences, so `elem/s` reads as sequences/s.
//! For a grid, percentiles and a JSON report use `bertrt bench` instead.

use bertrt::backend::cpu::CpuEngine;
use bertrt::bench::{presets, random_batch, Lengths, Rng};
use bertrt::config::ModelConfig;
use bertrt::model::random_weights;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::path::Path;
use std::time::Duration;

const TINY: &str = r#"{"model_type":"bert","architectures":["BertModel"],"hidden_size":128,
  "num_attention_heads":2,"num_hidden_layers":2,"intermediate_size":512,
  "max_position_embeddings":512,"vocab_size":30522}"#;

fn forward(c: &mut Criterion) {
    let mut g = c.benchmark_group("forward cpu f32 (elements = sequences)");
    let tiny = ModelConfig::from_json_str(TINY, Path::new("tiny")).unwrap();
    let base = presets::preset("bert-base").unwrap().config().unwrap();
    for (name, cfg, batch, seq) in [("tiny-2L-128H", tiny, 8, 128), ("bert-base", base, 8, 128)] {
        let engine = CpuEngine::new(random_weights(&cfg, 0).unwrap());
        let mut rng = Rng::new(1);
        let lengths = Lengths::Fixed.draw(batch, seq, &mut rng);
        let b = random_batch(&cfg, &lengths, &mut rng).unwrap();
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(format!("{name} b{batch} s{seq}"), |bch| {
            bch.iter(|| engine.forward(&b).unwrap())
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5))
}

criterion_group! { name = benches; config = config(); targets = forward }
criterion_main!(benches);

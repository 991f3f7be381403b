//! Unit tests of the bench module (split out to keep mod.rs short).
use super::*;

#[test]
fn percentiles_nearest_rank() {
    let ms: Vec<f64> = (1..=100).map(|x| x as f64).collect();
    let l = Latency::of(&ms);
    assert_eq!(
        (l.p50, l.p90, l.p99, l.min, l.max),
        (50.0, 90.0, 99.0, 1.0, 100.0)
    );
    assert_eq!(l.mean, 50.5);
    let one = Latency::of(&[3.0]);
    assert_eq!((one.p50, one.p99), (3.0, 3.0));
}

#[test]
fn length_distributions() {
    let mut rng = Rng::new(1);
    assert_eq!(Lengths::Fixed.draw(3, 7, &mut rng), vec![7, 7, 7]);
    let u = Lengths::Uniform.draw(4000, 128, &mut rng);
    assert!(u.iter().all(|&n| (1..=128).contains(&n)));
    assert!(u.contains(&1) && u.contains(&128));
    let a = Lengths::parse("avg0.6", None)
        .unwrap()
        .draw(4000, 512, &mut rng);
    let mean = a.iter().sum::<usize>() as f64 / a.len() as f64;
    assert!((mean / 512.0 - 0.6).abs() < 0.01, "mean {mean}");
    assert!(a.iter().all(|&n| (1..=512).contains(&n)));
    let low = Lengths::Average(0.25).draw(4000, 100, &mut rng);
    let mean = low.iter().sum::<usize>() as f64 / low.len() as f64;
    assert!((mean - 25.0).abs() < 1.0, "mean {mean}");
    assert!(Lengths::parse("avg1.5", None).is_err());
    assert!(Lengths::parse("real", None).is_err());
    assert!(Lengths::parse("bogus", None).is_err());
    let r = Lengths::Real {
        path: "x".into(),
        lengths: vec![5, 900],
    };
    assert!(r
        .draw(50, 128, &mut rng)
        .iter()
        .all(|&n| n == 5 || n == 128));
}

#[test]
fn random_batch_avoids_pad_and_fits_vocab() {
    let cfg = presets::preset("roberta-base").unwrap().config().unwrap();
    let b = random_batch(&cfg, &[512, 3], &mut Rng::new(9)).unwrap();
    assert_eq!(b.cu_seqlens(), [0, 512, 515]);
    assert!(b
        .input_ids()
        .iter()
        .all(|&i| i != 1 && (i as usize) < cfg.vocab_size));
    // RoBERTa positions start at pad + 1 and stay inside the table.
    assert_eq!(b.position_ids()[511], 513);
}

/// Counts which forward a cell ran, and keeps the wants it was asked.
#[derive(Default)]
struct Counting {
    forwards: std::sync::atomic::AtomicUsize,
    encodes: std::sync::atomic::AtomicUsize,
    wants: std::sync::Mutex<Vec<Want>>,
}

impl Backend for Counting {
    fn forward_want(&self, batch: &Batch, want: &Want) -> Result<crate::output::Wanted> {
        self.wants.lock().unwrap().push(want.clone());
        self.forward(batch).map(crate::output::Wanted::Everything)
    }
    fn forward(&self, _: &Batch) -> Result<crate::output::ForwardOutput> {
        self.forwards
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(crate::output::ForwardOutput {
            hidden: vec![],
            pooled: None,
            head: crate::output::HeadOutput::None,
        })
    }
    fn describe(&self) -> String {
        "counting".into()
    }
    fn encode_timed(&self, _: &Batch) -> Result<Option<f64>> {
        self.encodes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Some(1.0))
    }
}

#[test]
fn cells_time_the_bare_encoder_unless_heads_are_asked_for() {
    let cfg = presets::preset("bert-base").unwrap().config().unwrap();
    let settings = |timed| Settings {
        lengths: Lengths::Fixed,
        warmup: 2,
        iters: 5,
        max_time: None,
        seed: 1,
        profiling: Profiling::default(),
        timed,
    };
    let count = |b: &Counting| {
        (
            b.encodes.load(std::sync::atomic::Ordering::Relaxed),
            b.forwards.load(std::sync::atomic::Ordering::Relaxed),
        )
    };
    let enc = Counting::default();
    let cell = run_cell(&enc, &cfg, 2, 16, &settings(Timed::Encoder)).unwrap();
    assert_eq!(count(&enc), (7, 0), "(encoder calls, forwards)");
    assert_eq!(cell.latency_ms.mean, 1.0, "device time from encode_timed");
    let full = Counting::default();
    run_cell(&full, &cfg, 2, 16, &settings(Timed::ForwardWithHeads)).unwrap();
    assert_eq!(count(&full), (0, 7), "(encoder calls, forwards)");
    // Every forward went through forward_want with the task's want.
    let wants = full.wants.lock().unwrap();
    assert_eq!(wants.len(), 7, "forward_want calls");
    assert!(
        wants.iter().all(|w| *w == task_want(&cfg, &[0, 16, 32])),
        "{wants:?}"
    );
}

#[test]
fn head_cells_ask_what_the_task_reads() {
    let mut cfg = presets::preset("bert-base").unwrap().config().unwrap();
    let cu = [0, 5, 5, 12];
    let mean = Want::Embeddings {
        pooling: Pooling::Mean,
        normalize: true,
    };
    cfg.head = Head::Base;
    assert_eq!(task_want(&cfg, &cu), mean, "bare encoder: embeddings");
    cfg.head = Head::MaskedLm;
    // One mask row inside each non-empty sequence.
    assert_eq!(task_want(&cfg, &cu), Want::TokenLogitsAt(vec![2, 8]));
    for head in [
        Head::QuestionAnswering,
        Head::TokenClassification,
        Head::Discriminator,
    ] {
        cfg.head = head;
        assert_eq!(task_want(&cfg, &cu), Want::Head, "{head:?}");
    }
}

#[test]
fn flops_bert_base() {
    let cfg = presets::preset("bert-base").unwrap().config().unwrap();
    // 12 layers * 128 tokens * 2 * (4*768^2 + 2*768*3072) + 12 * 128^2 * 4 * 768
    let f = encoder_flops(&cfg, &[128]);
    let want = 12.0 * (128.0 * 2.0 * (4.0 * 589824.0 + 2.0 * 2359296.0) + 16384.0 * 4.0 * 768.0);
    assert!((f - want).abs() < 1.0);
}

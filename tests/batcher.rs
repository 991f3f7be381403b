//! The dynamic batcher: packed answers equal single-request answers, the
//! budgets hold, bad input and forward panics stay with their own request.

mod common;

use bertrt::batch::SequenceIds;
use bertrt::batcher::{Batcher, BatcherConfig, ForwardHook};
use bertrt::output::{HeadOutput, Want, Wanted};
use bertrt::tasks::embed::{embed, pool_embeddings, EmbedOptions, Embedding, Pooling};
use bertrt::tokenize::Truncation;
use bertrt::{Device, Engine};
use std::sync::{mpsc, Arc, Mutex};

fn engine() -> Arc<Engine> {
    Arc::new(Engine::load_dir(&common::model_dir("bert_mlm"), Device::Cpu).unwrap())
}

fn opts() -> EmbedOptions {
    EmbedOptions {
        pooling: Pooling::Mean,
        normalize: true,
        max_seq_length: None,
        truncation: Truncation::LongestFirst,
    }
}

/// Texts of 1 to ~60 words.
fn texts() -> Vec<String> {
    let words = "the cat sat on the mat and looked at the lake while paris stayed the capital";
    let w: Vec<&str> = words.split(' ').collect();
    (0..24)
        .map(|i| {
            (0..1 + (i * 7) % 60)
                .map(|j| w[(i + j) % w.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn seqs(eng: &Engine, text: &str) -> Vec<SequenceIds> {
    let e = eng
        .tokenizer
        .encode(
            text,
            None,
            eng.config.max_tokens_per_sequence(),
            Truncation::LongestFirst,
        )
        .unwrap();
    vec![SequenceIds {
        input_ids: e.ids,
        token_type_ids: e.type_ids,
    }]
}

fn vector(e: Embedding) -> Vec<f32> {
    match e {
        Embedding::Vector(v) => v,
        Embedding::Tokens(_) => panic!("a pooled vector expected"),
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// A hook that holds the first forward until the test releases it, so the
/// other requests are all queued when the worker looks again.
fn gate() -> (ForwardHook, mpsc::Sender<()>) {
    let (tx, rx) = mpsc::channel::<()>();
    let rx = Mutex::new(Some(rx));
    let hook: ForwardHook = Arc::new(move |_seqs: &[SequenceIds]| {
        if let Some(rx) = rx.lock().unwrap().take() {
            // Bounded, so a failing test cannot hang in the batcher's drop.
            let _ = rx.recv_timeout(std::time::Duration::from_secs(20));
        }
    });
    (hook, tx)
}

#[test]
fn batched_answers_equal_single_answers() {
    let eng = engine();
    let (hook, release) = gate();
    let batcher = Batcher::new(
        eng.clone(),
        BatcherConfig {
            max_batch_tokens: 400,
            max_batch_requests: 8,
            before_forward: Some(hook),
            after_forward: None,
        },
    )
    .unwrap();
    let texts = texts();
    let (tx, rx) = mpsc::channel();
    for (i, t) in texts.iter().enumerate() {
        let tx = tx.clone();
        batcher
            .submit_with(seqs(&eng, t), Box::new(move |r| tx.send((i, r)).unwrap()))
            .unwrap();
    }
    release.send(()).unwrap();
    let mut got = vec![None; texts.len()];
    for _ in 0..texts.len() {
        let (i, r) = rx.recv().unwrap();
        let r = r.unwrap();
        let out = r.output.into_everything().unwrap();
        let e = pool_embeddings(&eng.config, &r.batch, &out, &opts()).unwrap();
        got[i] = Some(vector(e.into_iter().next().unwrap()));
    }
    let mut worst = 0f32;
    for (i, t) in texts.iter().enumerate() {
        let single = vector(embed(&eng, &[t], &opts()).unwrap().remove(0));
        worst = worst.max(max_abs_diff(got[i].as_ref().unwrap(), &single));
    }
    let stats = batcher.stats();
    eprintln!("batched vs single max |diff| {worst:e}; {stats:?}");
    assert!(worst <= 1e-6, "batched differs from single by {worst}");
    assert_eq!(stats.requests, texts.len() as u64, "requests lost");
    assert_eq!(
        stats.max_requests_in_batch, 8,
        "queued requests were not packed up to max_batch_requests"
    );
    assert!(stats.batches < texts.len() as u64, "nothing was batched");
}

#[test]
fn token_budget_holds() {
    let eng = engine();
    let (hook, release) = gate();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let counting: bertrt::batcher::ForwardHook = Arc::new(move |s: &[SequenceIds]| {
        seen2
            .lock()
            .unwrap()
            .push(s.iter().map(|q| q.input_ids.len()).sum::<usize>());
        hook(s)
    });
    let batcher = Batcher::new(
        eng.clone(),
        BatcherConfig {
            max_batch_tokens: 100,
            max_batch_requests: usize::MAX,
            before_forward: Some(counting),
            after_forward: None,
        },
    )
    .unwrap();
    let (tx, rx) = mpsc::channel();
    let texts = texts();
    for t in &texts {
        let tx = tx.clone();
        batcher
            .submit_with(seqs(&eng, t), Box::new(move |r| tx.send(r).unwrap()))
            .unwrap();
    }
    release.send(()).unwrap();
    for _ in 0..texts.len() {
        rx.recv().unwrap().unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    eprintln!("batch token counts {seen:?}");
    assert!(
        seen.iter().all(|&n| n <= 100),
        "a batch over 100 tokens: {seen:?}"
    );
    assert!(
        seen.iter().any(|&n| n > 60),
        "batches were not filled: {seen:?}"
    );
    // A request bigger than the budget is refused up front, naming the limit.
    let long = "word ".repeat(150);
    let mut two = seqs(&eng, &long);
    two.extend(seqs(&eng, &long));
    let err = batcher.run(two).unwrap_err().to_string();
    assert!(err.contains("max_batch_tokens is 100"), "{err}");
}

#[test]
fn bad_input_and_panics_fail_only_their_own_request() {
    let eng = engine();
    // Panics when a batch holds the marker sequence [CLS] [SEP] + id 7.
    let marker = vec![eng.config.vocab_size as u32 - 1, 7, 7, 7];
    let m2 = marker.clone();
    let hook: ForwardHook = Arc::new(move |s: &[SequenceIds]| {
        if s.iter().any(|q| q.input_ids == m2) {
            panic!("planted fault");
        }
    });
    let batcher = Batcher::new(
        eng.clone(),
        BatcherConfig {
            before_forward: Some(hook),
            ..Default::default()
        },
    )
    .unwrap();
    // Out-of-vocabulary id: refused at submit, naming the id.
    let bad = vec![SequenceIds {
        input_ids: vec![eng.config.vocab_size as u32 + 5],
        token_type_ids: vec![],
    }];
    let err = batcher.run(bad).unwrap_err().to_string();
    assert!(err.contains("outside the vocabulary"), "{err}");
    // The faulty request fails with the panic named; the worker lives on.
    let err = batcher
        .run(vec![SequenceIds {
            input_ids: marker,
            token_type_ids: vec![],
        }])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("panicked") && err.contains("planted fault"),
        "{err}"
    );
    let r = batcher.run(seqs(&eng, "still serving")).unwrap();
    let got = vector(
        pool_embeddings(
            &eng.config,
            &r.batch,
            &r.output.clone().into_everything().unwrap(),
            &opts(),
        )
        .unwrap()
        .remove(0),
    );
    let single = vector(embed(&eng, &["still serving"], &opts()).unwrap().remove(0));
    assert!(max_abs_diff(&got, &single) <= 1e-6);
    assert_eq!(batcher.stats().failed_batches, 1);
    // Exclusive work runs on the engine and its panics stay with it too.
    let err = batcher
        .run_exclusive(|_e: &Engine| -> bertrt::Result<()> { panic!("exclusive fault") })
        .unwrap_err()
        .to_string();
    assert!(err.contains("exclusive fault"), "{err}");
    let n = batcher
        .run_exclusive(|e: &Engine| e.embed(&["x"], &opts()).map(|v| v.len()))
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn drop_finishes_queued_requests() {
    let eng = engine();
    let (hook, release) = gate();
    let batcher = Batcher::new(
        eng.clone(),
        BatcherConfig {
            before_forward: Some(hook),
            max_batch_requests: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let (tx, rx) = mpsc::channel();
    for t in texts().iter().take(7) {
        let tx = tx.clone();
        batcher
            .submit_with(
                seqs(&eng, t),
                Box::new(move |r| tx.send(r.is_ok()).unwrap()),
            )
            .unwrap();
    }
    release.send(()).unwrap();
    drop(batcher);
    drop(tx);
    let answered: Vec<bool> = rx.iter().collect();
    assert_eq!(answered, vec![true; 7], "requests lost at shutdown");
}

/// `Batcher::forward` (the RunForward the server gives the task helpers)
/// answers as the engine does, with the request's times filled in.
#[test]
fn task_helpers_through_the_batcher_equal_direct_calls() {
    use bertrt::tasks::qa;
    let eng = Arc::new(Engine::load_dir(&common::model_dir("bert_qa"), Device::Cpu).unwrap());
    let b = Batcher::new(eng.clone(), BatcherConfig::default()).unwrap();
    let items = [
        ("where is the cat", "the cat sat on the mat in paris"),
        ("who sat", "the old dog sat near the lake"),
    ];
    let opts = qa::QaOptions {
        top_k: 3,
        ..qa::QaOptions::hf_defaults(&eng)
    };
    let direct = qa::qa_many(&eng, &items, &opts).unwrap();
    let batched = qa::qa_many_via(&eng, &items, &opts, &|x, w| b.forward_want(x, w)).unwrap();
    assert_eq!(batched, direct, "QA through the batcher differs");
    let (_, batch) = eng
        .encode_batch(
            &[("a b c", Some("d e")), ("f", None)],
            None,
            Truncation::LongestFirst,
        )
        .unwrap();
    let r = b.forward_timed(&batch, &Want::Everything).unwrap();
    assert_eq!(
        r.batch, batch,
        "the request's own batch is not the one sent"
    );
    assert_eq!(
        r.output.clone().into_everything().unwrap().hidden,
        eng.forward(&batch).unwrap().hidden
    );
    assert!(
        r.forward_time > std::time::Duration::ZERO,
        "forward time not set"
    );
}

/// Requests for token rows share one forward, each getting its own rows'
/// logits (its rows counted from its own first token); a request that wants
/// something else waits for the next forward.
#[test]
fn token_row_requests_share_a_forward_and_get_their_own_rows() {
    let eng = engine();
    let (hook, release) = gate();
    let batcher = Batcher::new(
        eng.clone(),
        BatcherConfig {
            max_batch_tokens: 400,
            max_batch_requests: 8,
            before_forward: Some(hook),
            after_forward: None,
        },
    )
    .unwrap();
    let texts = texts();
    let (tx, rx) = mpsc::channel();
    // The first request alone (held by the gate); then three for rows and
    // one for the head, queued behind it.
    let mut asked = Vec::new();
    for (i, t) in texts.iter().take(4).enumerate() {
        let s = seqs(&eng, t);
        let n = s[0].input_ids.len();
        let want = Want::TokenLogitsAt(vec![n - 1, 0, n / 2]);
        asked.push((s.clone(), want.clone()));
        let tx = tx.clone();
        batcher
            .submit_want(s, want, Box::new(move |r| tx.send((i, r)).unwrap()))
            .unwrap();
        // The worker takes the first request (and stops at the gate) before
        // the others are queued.
        let t0 = std::time::Instant::now();
        while i == 0 && batcher.queue_len() > 0 {
            assert!(
                t0.elapsed().as_secs() < 20,
                "the worker never took a request"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    let s = seqs(&eng, &texts[5]);
    asked.push((s.clone(), Want::Head));
    let tx4 = tx.clone();
    batcher
        .submit_want(s, Want::Head, Box::new(move |r| tx4.send((4, r)).unwrap()))
        .unwrap();
    release.send(()).unwrap();
    for _ in 0..asked.len() {
        let (i, r) = rx.recv().unwrap();
        let r = r.unwrap();
        let (s, want) = &asked[i];
        let batch = bertrt::batch::Batch::pack(s, &eng.config).unwrap();
        let alone = eng.forward_want(&batch, want).unwrap();
        match (&r.output, &alone) {
            (Wanted::TokenLogitsAt(a), Wanted::TokenLogitsAt(b)) => {
                assert!(max_abs_diff(a, b) <= 1e-5, "request {i}: rows differ")
            }
            (
                Wanted::Head(HeadOutput::TokenLogits(a)),
                Wanted::Head(HeadOutput::TokenLogits(b)),
            ) => assert!(max_abs_diff(a, b) <= 1e-5, "request {i}: head differs"),
            (a, b) => panic!("request {i}: {a:?} / {b:?}"),
        }
    }
    // The gated first forward, the other three rows requests together, the
    // head request alone.
    let st = batcher.stats();
    assert_eq!((st.batches, st.max_requests_in_batch), (3, 3), "{st:?}");
}

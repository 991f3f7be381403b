//! `bertrt serve`'s newer routes and options against the library and the
//! reference goldens: `/embed_all`, `/embed` with `truncation_direction` and
//! `prompt_name`, `/predict` `raw_scores`, `/rerank` against
//! sentence-transformers' CrossEncoder; then metrics, logs and the request
//! timeout.

mod common;

use bertrt::batch::{Batch, SequenceIds};
use bertrt::tasks::embed::{pool_embeddings, EmbedOptions, Embedding, Pooling};
use bertrt::tokenize::Truncation;
use bertrt::{Device, Engine};
use common::server::*;
use serde_json::{json, Value};

/// The library's pooled output of `text` encoded with `truncation` at `limit`.
fn library_embedding(
    eng: &Engine,
    text: &str,
    limit: usize,
    truncation: Truncation,
    opts: &EmbedOptions,
) -> Embedding {
    let e = eng.tokenizer.encode(text, None, limit, truncation).unwrap();
    let batch = Batch::pack(
        &[SequenceIds {
            input_ids: e.ids,
            token_type_ids: e.type_ids,
        }],
        &eng.config,
    )
    .unwrap();
    let out = eng.forward(&batch).unwrap();
    pool_embeddings(&eng.config, &batch, &out, opts)
        .unwrap()
        .remove(0)
}

fn vector(e: Embedding) -> Vec<f32> {
    match e {
        Embedding::Vector(v) => v,
        Embedding::Tokens(_) => panic!("vector expected"),
    }
}

#[test]
fn embed_all_truncation_direction_and_prompts() {
    // A copy of bert_mlm's folder with sentence-transformers prompts.
    let dir = std::env::temp_dir().join(format!("bertrt-serve-prompts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for f in std::fs::read_dir(common::model_dir("bert_mlm")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), dir.join(f.file_name())).unwrap();
    }
    std::fs::write(
        dir.join("config_sentence_transformers.json"),
        json!({"prompts": {"query": "query: ", "passage": "passage: "}}).to_string(),
    )
    .unwrap();
    let s = Server::start(dir.to_str().unwrap(), &[], &[]);
    let eng = Engine::load_dir(&dir, Device::Cpu).unwrap();
    let mut opts = EmbedOptions::from_model_dir(&dir).unwrap();
    opts.normalize = true;
    let limit = eng.config.max_tokens_per_sequence();

    // /embed_all: every token's hidden state, unpooled and unnormalised.
    let text = "the cat sat on the mat";
    let got = s.post_ok("/embed_all", json!({"inputs": [text]}));
    let per_token = EmbedOptions {
        pooling: Pooling::None,
        normalize: false,
        ..opts.clone()
    };
    let Embedding::Tokens(want) =
        library_embedding(&eng, text, limit, Truncation::LongestFirst, &per_token)
    else {
        panic!("per-token output expected")
    };
    let rows = got[0].as_array().unwrap();
    assert_eq!(rows.len(), want.len(), "/embed_all: one row per token");
    for (i, (row, w)) in rows.iter().zip(&want).enumerate() {
        let d = max_abs_diff(&floats(row), w);
        assert!(
            d <= 1e-6,
            "/embed_all token {i} differs from the library by {d}"
        );
    }

    // truncation_direction Left keeps the end of an over-long text.
    let long = (0..200)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let left = eng
        .tokenizer
        .encode(&long, None, limit, Truncation::LongestFirstLeft)
        .unwrap();
    let full = eng
        .tokenizer
        .encode(&long, None, usize::MAX, Truncation::LongestFirst)
        .unwrap();
    assert!(left.truncated_tokens > 0, "the text must be over the limit");
    let n = left.ids.len();
    assert_eq!(
        left.ids[1..n - 1],
        full.ids[full.ids.len() - (n - 1)..full.ids.len() - 1],
        "left truncation kept other tokens than the text's last ones"
    );
    for (dir_name, side) in [
        ("Left", Truncation::LongestFirstLeft),
        ("Right", Truncation::LongestFirst),
    ] {
        let got = s.post_ok(
            "/embed",
            json!({"inputs": long, "truncation_direction": dir_name}),
        );
        let want = vector(library_embedding(&eng, &long, limit, side, &opts));
        let d = max_abs_diff(&floats(&got[0]), &want);
        assert!(
            d <= 1e-6,
            "truncation_direction {dir_name} differs from the library by {d}"
        );
    }
    let l = s.post_ok(
        "/embed",
        json!({"inputs": long, "truncation_direction": "Left"}),
    );
    let r = s.post_ok("/embed", json!({"inputs": long}));
    assert_ne!(l, r, "Left and Right truncation gave the same vector");

    // prompt_name puts the folder's prompt before the text.
    let with = s.post_ok("/embed", json!({"inputs": text, "prompt_name": "query"}));
    let want = vector(library_embedding(
        &eng,
        &format!("query: {text}"),
        limit,
        Truncation::LongestFirst,
        &opts,
    ));
    let d = max_abs_diff(&floats(&with[0]), &want);
    assert!(
        d <= 1e-6,
        "prompt_name query differs from the library on 'query: {text}' by {d}"
    );
    let without = s.post_ok("/embed", json!({"inputs": text}));
    assert_ne!(with, without, "prompt_name changed nothing");
    for (body, needle) in [
        (
            json!({"inputs": text, "prompt_name": "nope"}),
            "no prompt named \"nope\"",
        ),
        (
            json!({"inputs": text, "truncation_direction": "up"}),
            "`truncation_direction`",
        ),
        (json!({"inputs": text, "prompt_name": 3}), "`prompt_name`"),
    ] {
        let (st, v) = s.post("/embed", body.clone());
        assert_eq!(st, 422, "{body}: {v}");
        let msg = v["error"].as_str().unwrap();
        assert!(msg.contains(needle), "{body}: '{msg}' lacks '{needle}'");
    }
    drop(s);
    // A Pooling that leaves the prompt out (include_prompt: false) is refused by name.
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    std::fs::write(
        dir.join("modules.json"),
        json!([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}
        ])
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.join("1_Pooling/config.json"),
        json!({"word_embedding_dimension": 32, "pooling_mode_mean_tokens": true, "include_prompt": false})
            .to_string(),
    )
    .unwrap();
    let s = Server::start(dir.to_str().unwrap(), &[], &[]);
    let (st, v) = s.post("/embed", json!({"inputs": text, "prompt_name": "query"}));
    assert_eq!(st, 422, "include_prompt false: {v}");
    assert!(
        v["error"].as_str().unwrap().contains("include_prompt"),
        "{v}"
    );
    s.post_ok("/embed", json!({"inputs": text}));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn predict_raw_scores_are_hf_logits() {
    let s = Server::start(&fixture("bert_cls"), &[], &[]);
    let golden = common::load_golden("bert_cls");
    let logits = &golden["pair_logits"];
    let meta: Value = serde_json::from_str(
        &std::fs::read_to_string(common::fixtures().join("golden/bert_cls.json")).unwrap(),
    )
    .unwrap();
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(common::model_dir("bert_cls").join("config.json")).unwrap(),
    )
    .unwrap();
    let n = logits.shape[1];
    for (p, pair) in meta["pairs"].as_array().unwrap().iter().enumerate() {
        let got = s.post_ok("/predict", json!({"inputs": pair, "raw_scores": true}));
        let soft = s.post_ok("/predict", json!({"inputs": pair}));
        assert_ne!(got, soft, "raw_scores changed nothing");
        for entry in got.as_array().unwrap() {
            let label = entry["label"].as_str().unwrap();
            let idx = (0..n)
                .find(|i| config["id2label"][i.to_string()] == label)
                .unwrap_or_else(|| panic!("label {label} not in id2label"));
            let want = logits.data[p * n + idx];
            let g = entry["score"].as_f64().unwrap();
            assert!(
                (g - want).abs() <= 1e-4,
                "pair {p} label {label}: raw score {g} vs HF logit {want}"
            );
        }
    }
}

#[test]
fn rerank_equals_sentence_transformers_cross_encoder() {
    let s = Server::start(&fixture("bert_rerank"), &[], &[]);
    let g: Value = serde_json::from_str(
        &std::fs::read_to_string(common::fixtures().join("golden/rerank.json")).unwrap(),
    )
    .unwrap();
    let docs = g["documents"].clone();
    let got = s.post_ok(
        "/rerank",
        json!({"query": g["query"], "texts": docs, "return_text": true}),
    );
    let got = got.as_array().unwrap();
    let want = g["rank"].as_array().unwrap();
    assert_eq!(got.len(), want.len());
    for (r, (a, b)) in got.iter().zip(want).enumerate() {
        assert_eq!(
            a["index"], b["index"],
            "rank {r}: {a} vs CrossEncoder.rank {b}"
        );
        let (x, y) = (a["score"].as_f64().unwrap(), b["score"].as_f64().unwrap());
        assert!(
            (x - y).abs() <= 1e-5,
            "rank {r}: score {x} vs CrossEncoder {y}"
        );
        let i = b["index"].as_u64().unwrap() as usize;
        assert_eq!(a["text"], docs[i], "rank {r}: return_text");
    }
    let raw = s.post_ok(
        "/rerank",
        json!({"query": g["query"], "texts": docs, "raw_scores": true}),
    );
    for a in raw.as_array().unwrap() {
        assert!(a.get("text").is_none(), "text without return_text: {a}");
        let i = a["index"].as_u64().unwrap() as usize;
        let (x, y) = (
            a["score"].as_f64().unwrap(),
            g["raw_scores"][i].as_f64().unwrap(),
        );
        assert!(
            (x - y).abs() <= 1e-5,
            "text {i}: raw score {x} vs logit {y}"
        );
    }
    let (st, v) = s.post("/rerank", json!({"texts": ["a"]}));
    assert_eq!(st, 422, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("`query`: missing"),
        "{v}"
    );

    // A classifier with 3 labels is not a reranker.
    let c = Server::start(&fixture("bert_cls"), &[], &[]);
    let (st, v) = c.post("/rerank", json!({"query": "a", "texts": ["b"]}));
    assert_eq!(st, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("one label"), "{v}");
}

/// The value of the first metrics line starting with `prefix`.
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no metric {prefix}:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn metrics_and_logs_count_each_request() {
    let s = Server::start(&fixture("bert_mlm"), &["--json-logs"], &[]);
    let eng = Engine::load_dir(&common::model_dir("bert_mlm"), Device::Cpu).unwrap();
    let before = s.get("/metrics").1;
    let text = "the cat sat on the mat";
    let n = eng
        .tokenizer
        .encode(text, None, 64, Truncation::LongestFirst)
        .unwrap()
        .ids
        .len();
    s.post_ok("/embed", json!({"inputs": text}));
    let after = s.get("/metrics").1;
    let delta = |p: &str| metric(&after, p) - metric(&before, p);
    assert_eq!(delta("bertrt_tokens_total "), n as f64, "tokens processed");
    assert_eq!(
        delta("bertrt_batch_size_count "),
        1.0,
        "batch size histogram"
    );
    assert_eq!(
        delta("bertrt_batch_tokens_sum "),
        n as f64,
        "batch tokens histogram"
    );
    assert_eq!(
        metric(
            &after,
            "bertrt_request_duration_seconds_count{route=\"/embed\"} "
        ),
        1.0,
        "latency histogram of /embed"
    );
    assert_eq!(metric(&after, "bertrt_queue_size "), 0.0);
    // Task routes go through the batcher too: their forwards are counted.
    let masked = "the cat [MASK] on the mat";
    let m = eng
        .tokenizer
        .encode(masked, None, 64, Truncation::LongestFirst)
        .unwrap()
        .ids
        .len();
    s.post_ok("/fill-mask", json!({"inputs": masked}));
    let last = s.get("/metrics").1;
    let delta = |p: &str| metric(&last, p) - metric(&after, p);
    assert_eq!(
        delta("bertrt_batch_size_count "),
        1.0,
        "/fill-mask's forward did not go through the batcher"
    );
    assert_eq!(
        delta("bertrt_tokens_total "),
        m as f64,
        "/fill-mask's tokens"
    );
    // The request's JSON log line: id, route, status, tokens, queue and compute time.
    let log = s.log.lock().unwrap().clone();
    let line: Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["fields"]["route"] == "/embed")
        .unwrap_or_else(|| panic!("no JSON log line for /embed:\n{log}"));
    let f = &line["fields"];
    assert_eq!(f["status"], 200, "{line}");
    assert_eq!(f["tokens"], n, "{line}");
    assert!(f["request_id"].is_u64(), "{line}");
    assert!(f["queue_ms"].as_f64().is_some_and(|x| x >= 0.0), "{line}");
    assert!(f["compute_ms"].as_f64().is_some_and(|x| x > 0.0), "{line}");
}

#[test]
fn wrong_method_and_timeout_get_json_errors() {
    let s = Server::start(
        &fixture("bert_mlm"),
        &["--request-timeout", "1"],
        &[("BERTRT_SERVE_SLOW_ON_TEXT", "a slow one")],
    );
    let (st, text) = s.get("/embed");
    assert_eq!(st, 405, "{text}");
    let v: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("405 body not JSON ({e}): {text}"));
    assert_eq!(v["error"], "GET is not allowed on /embed", "{v}");
    let (st, text) = s.get("/v1/embeddings");
    assert_eq!(st, 405, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v["error"]["type"], "invalid_request_error",
        "OpenAI shape: {v}"
    );

    let (st, v) = s.post("/embed", json!({"inputs": "a slow one"}));
    assert_eq!(st, 408, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("--request-timeout"),
        "{v}"
    );
    assert_eq!(v["error_type"], "Timeout");
    assert_eq!(s.get("/health").0, 200);
    // The slow forward still holds the batcher (3 s): wait (bounded) until it
    // is done (warm-up + it = 2 forwards), then the server answers in time.
    let t = std::time::Instant::now();
    while metric(
        &s.get("/metrics").1,
        "bertrt_forward_duration_seconds_count ",
    ) < 2.0
    {
        assert!(
            t.elapsed().as_secs() < 30,
            "the slow forward never finished"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    s.post_ok("/embed", json!({"inputs": "a quick one"}));
}

#[test]
fn dtype_and_threads_reach_the_engine() {
    let s = Server::start(
        &fixture("bert_mlm"),
        &["--dtype", "f32", "--threads", "1"],
        &[],
    );
    let info: Value = serde_json::from_str(&s.get("/info").1).unwrap();
    assert_eq!(info["model_dtype"], "f32", "{info}");
    let eng = Engine::load_dir(&common::model_dir("bert_mlm"), Device::Cpu).unwrap();
    let dir = common::model_dir("bert_mlm");
    let mut opts = EmbedOptions::from_model_dir(&dir).unwrap();
    opts.normalize = true;
    let got = s.post_ok("/embed", json!({"inputs": "one thread"}));
    let want = vector(library_embedding(
        &eng,
        "one thread",
        64,
        Truncation::LongestFirst,
        &opts,
    ));
    let d = max_abs_diff(&floats(&got[0]), &want);
    assert!(
        d <= 1e-6,
        "--threads 1 answer differs from the library by {d}"
    );
    // Bad values are refused at start, naming the flag.
    for (args, needle) in [
        (vec!["--threads", "0"], "--threads"),
        (vec!["--device", "cpu", "--dtype", "f16"], "--dtype"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_bertrt"))
            .args(["serve", "--model", &fixture("bert_mlm"), "--port", "0"])
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        assert!(err.contains(needle), "{args:?}: '{err}' lacks {needle}");
    }
}

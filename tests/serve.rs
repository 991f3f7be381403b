//! `bertrt serve` end to end: the real binary on a loopback port chosen by
//! the OS, raw HTTP from a blocking client, answers compared with the
//! library's (which the CLI prints as is), the bad-input matrix, concurrency,
//! a planted forward panic, and SIGTERM with requests in flight.

mod common;

use bertrt::tasks::embed::{embed, EmbedOptions, Embedding};
use bertrt::tasks::{classify, detect, fill_mask, qa};
use bertrt::{Device, Engine};
use common::server::*;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The library's answer for one text, with the server's default normalize.
fn library_embedding(eng: &Engine, text: &str) -> Vec<f32> {
    let mut opts = EmbedOptions::from_model_dir(&eng.dir).unwrap();
    opts.normalize = true;
    match embed(eng, &[text], &opts).unwrap().remove(0) {
        Embedding::Vector(v) => v,
        Embedding::Tokens(_) => panic!("vector expected"),
    }
}

/// Texts of 1 to 120 words.
fn varied_texts(n: usize) -> Vec<String> {
    let w: Vec<&str> =
        "the quick brown fox jumps over a lazy dog near the river bank in paris today"
            .split(' ')
            .collect();
    (0..n)
        .map(|i| {
            (0..1 + (i * 37) % 120)
                .map(|j| w[(i + j) % w.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

#[test]
fn embed_routes_equal_library() {
    let s = Server::start(MINILM, &[], &[]);
    let eng = Engine::load(MINILM, Device::Cpu).unwrap();
    let texts = [
        "Hello world",
        "The cat sat on the mat and looked at the lake.",
    ];
    let got = s.post_ok("/embed", json!({"inputs": texts}));
    for (i, t) in texts.iter().enumerate() {
        let d = max_abs_diff(&floats(&got[i]), &library_embedding(&eng, t));
        assert!(
            d <= 1e-6,
            "/embed input {i} differs from the library by {d}"
        );
    }
    // A single string gives a list of one.
    let one = s.post_ok("/embed", json!({"inputs": texts[0]}));
    assert_eq!(one[0], got[0]);
    // normalize: false is the raw mean (MiniLM's folder normalises, so differs).
    let raw = s.post_ok("/embed", json!({"inputs": texts[0], "normalize": false}));
    let norm: f32 = floats(&raw[0]).iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!(
        (norm - 1.0).abs() > 1e-3,
        "normalize:false still unit length"
    );

    // OpenAI: float and base64 equal /embed; model echoed; usage counted.
    for path in ["/v1/embeddings", "/embeddings"] {
        let f = s.post_ok(path, json!({"input": texts, "model": "my-model"}));
        assert_eq!(f["object"], "list");
        assert_eq!(f["model"], "my-model");
        for i in 0..2 {
            assert_eq!(f["data"][i]["index"], i);
            assert_eq!(f["data"][i]["object"], "embedding");
            assert_same(
                &f["data"][i]["embedding"],
                &got[i],
                &format!("{path} float input {i}"),
            );
        }
        let ntok: usize = texts
            .iter()
            .map(|t| {
                eng.tokenizer
                    .encode(t, None, 512, bertrt::tokenize::Truncation::LongestFirst)
                    .unwrap()
                    .ids
                    .len()
            })
            .sum();
        assert_eq!(f["usage"]["prompt_tokens"], ntok);
        assert_eq!(f["usage"]["total_tokens"], ntok);
    }
    let b = s.post_ok(
        "/v1/embeddings",
        json!({"input": texts[1], "encoding_format": "base64"}),
    );
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(decoded, floats(&got[1]), "base64 differs from float");
    // Token ids are taken as the whole sequence.
    let ids = eng
        .tokenizer
        .encode(
            texts[0],
            None,
            512,
            bertrt::tokenize::Truncation::LongestFirst,
        )
        .unwrap()
        .ids;
    let t = s.post_ok("/v1/embeddings", json!({"input": [ids]}));
    assert_same(&t["data"][0]["embedding"], &got[0], "token-id input");

    // /tokenize gives the library's ids.
    let tk = s.post_ok("/tokenize", json!({"inputs": texts[1]}));
    let want = eng
        .tokenizer
        .encode(
            texts[1],
            None,
            512,
            bertrt::tokenize::Truncation::LongestFirst,
        )
        .unwrap();
    let got_ids: Vec<u64> = tk[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect();
    assert_eq!(
        got_ids,
        want.ids.iter().map(|&i| i as u64).collect::<Vec<_>>()
    );
    assert_eq!(tk[0][0]["special"], true);

    // /decode gives the library's text back, one string per list of ids.
    let ids: Vec<u32> = want.ids.clone();
    for (skip, body) in [
        (true, json!({"ids": ids})),
        (false, json!({"ids": [ids], "skip_special_tokens": false})),
    ] {
        let d = s.post_ok("/decode", body);
        assert_eq!(
            d,
            json!([eng.tokenizer.decode(&want.ids, skip).unwrap()]),
            "skip_special_tokens {skip}"
        );
    }
    let with_specials = s.post_ok("/decode", json!({"ids": ids, "skip_special_tokens": false}));
    let without = s.post_ok("/decode", json!({"ids": ids}));
    assert_ne!(
        with_specials, without,
        "skip_special_tokens changes nothing"
    );

    let (st, info) = s.get("/info");
    assert_eq!(st, 200);
    let info: Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["model_id"], MINILM);
    assert_eq!(info["max_input_length"], 256, "MiniLM's max_seq_length");
    assert_eq!(info["model_type"]["embedding"]["pooling"], "mean");
    let (st, doc) = s.get("/api-doc/openapi.json");
    assert_eq!(st, 200);
    let doc: Value = serde_json::from_str(&doc).expect("OpenAPI document is JSON");
    // Every route the server has (one list: the router's metrics labels).
    let routes = "/health /info /metrics /api-doc/openapi.json / /embed /embed_all /v1/embeddings \
        /embeddings /predict /rerank /tokenize /decode /fill-mask /question-answering \
        /token-classification /detect";
    for p in routes.split_whitespace() {
        assert!(doc["paths"][p].is_object(), "OpenAPI document lacks {p}");
    }
    let (st, m) = s.get("/metrics");
    assert_eq!(st, 200);
    assert!(
        m.contains("bertrt_requests_total{route=\"/embed\",status=\"200\"} 3"),
        "{m}"
    );
}

#[test]
fn task_routes_equal_library() {
    let check = |model: &str, path: &str, body: Value, want: Value| {
        let s = Server::start(&fixture(model), &[], &[]);
        let got = s.post_ok(path, body);
        assert_same(&got, &want, &format!("{model} {path}"));
    };
    let eng = |m: &str| Engine::load_dir(&common::model_dir(m), Device::Cpu).unwrap();

    let e = eng("bert_mlm");
    let mut fm = fill_mask::fill_mask(&e, "the cat [MASK] on the mat", 3).unwrap();
    check(
        "bert_mlm",
        "/fill-mask",
        json!({"inputs": "the cat [MASK] on the mat", "parameters": {"top_k": 3}}),
        json!(fm.remove(0)),
    );

    let e = eng("bert_qa");
    let opts = qa::QaOptions {
        top_k: 2,
        ..qa::QaOptions::hf_defaults(&e)
    };
    let want = qa::qa(
        &e,
        "where is the cat",
        "the cat sat on the mat in paris",
        &opts,
    )
    .unwrap();
    check(
        "bert_qa",
        "/question-answering",
        json!({"inputs": {"question": "where is the cat", "context": "the cat sat on the mat in paris"}, "parameters": {"top_k": 2}}),
        json!(want),
    );

    let e = eng("bert_tokcls");
    let want = classify::classify_tokens(&e, "john lives in paris", &["O"]).unwrap();
    check(
        "bert_tokcls",
        "/token-classification",
        json!({"inputs": "john lives in paris"}),
        json!(want),
    );

    let e = eng("electra_disc");
    let want = detect::detect(&e, "the cat ate on the mat").unwrap();
    check(
        "electra_disc",
        "/detect",
        json!({"inputs": "the cat ate on the mat"}),
        json!(want),
    );

    let e = eng("bert_cls");
    let want = classify::classify(&e, "a fine day", Some("a good day")).unwrap();
    check(
        "bert_cls",
        "/predict",
        json!({"inputs": ["a fine day", "a good day"]}),
        json!(want),
    );
    // TEI's `/` dispatches to predict for a classifier.
    check(
        "bert_cls",
        "/",
        json!({"inputs": ["a fine day", "a good day"]}),
        json!(want),
    );
}

#[test]
fn bad_inputs_get_json_4xx_and_server_stays_healthy() {
    let s = Server::start(
        &fixture("bert_mlm"),
        &[
            "--api-key",
            "sekret",
            "--max-client-batch-size",
            "4",
            "--auto-truncate",
            "false",
        ],
        &[],
    );
    let key = Some("sekret");
    let long = "word ".repeat(2000);
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("/embed", "{not json".into(), 422, "not valid JSON"),
        (
            "/decode",
            json!({"ids": [1, 999999]}).to_string(),
            422,
            "`ids`: 999999 is not a token id",
        ),
        ("/decode", json!({"ids": "12"}).to_string(), 422, "`ids`"),
        ("/decode", json!({}).to_string(), 422, "`ids`: missing"),
        (
            "/embed",
            json!({"inputs": []}).to_string(),
            422,
            "`inputs`: must not be empty",
        ),
        ("/embed", json!({"inputs": 5}).to_string(), 422, "`inputs`"),
        (
            "/embed",
            json!({"inputs": ["a", 3]}).to_string(),
            422,
            "`inputs[1]`: must be a string",
        ),
        (
            "/embed",
            json!({"input": "a"}).to_string(),
            422,
            "`inputs`: missing",
        ),
        (
            "/embed",
            json!({"inputs": "a", "normalize": "yes"}).to_string(),
            422,
            "`normalize`",
        ),
        (
            "/embed",
            json!({"inputs": ["a", "b", "c", "d", "e"]}).to_string(),
            413,
            "limit is 4",
        ),
        (
            "/embed",
            json!({"inputs": long}).to_string(),
            413,
            "the limit is",
        ),
        ("/embed", "x".repeat(2_000_001), 413, "length limit"),
        (
            "/predict",
            json!({"inputs": "a"}).to_string(),
            400,
            "masked-LM head",
        ),
        (
            "/question-answering",
            json!({"inputs": {"question": "a", "context": "b"}}).to_string(),
            400,
            "BertForMaskedLM",
        ),
        (
            "/fill-mask",
            json!({"inputs": "no mask here"}).to_string(),
            422,
            "mask",
        ),
        (
            "/fill-mask",
            json!({"inputs": "a [MASK]", "parameters": {"top_k": 0}}).to_string(),
            422,
            "parameters.top_k",
        ),
        (
            "/rerank",
            json!({"query": "a", "texts": ["b"]}).to_string(),
            400,
            "masked-LM head",
        ),
        (
            "/embed_all",
            json!({"inputs": []}).to_string(),
            422,
            "`inputs`: must not be empty",
        ),
        ("/nope", "{}".into(), 404, "no such route"),
    ];
    for (path, body, want, needle) in &cases {
        let (st, text) = s.post_raw(path, body, key);
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path}: error body is not JSON ({e}): {text}"));
        assert_eq!(st, *want, "{path} {}: {v}", &body[..body.len().min(60)]);
        let msg = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{path}: no error string: {v}"));
        assert!(v["error_type"].is_string(), "{path}: no error_type: {v}");
        assert!(msg.contains(needle), "{path}: '{msg}' lacks '{needle}'");
    }
    // OpenAI routes answer in OpenAI's shape.
    let (st, text) = s.post_raw("/v1/embeddings", &json!({"input": []}).to_string(), key);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(st, 422);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("`input`"),
        "{v}"
    );
    assert_eq!(v["error"]["type"], "invalid_request_error");
    // Keys: none, wrong, or a prefix of the right one are refused; /health is open.
    for k in [None, Some("wrong"), Some("sekre"), Some("sekret2")] {
        let (st, text) = s.post_raw("/embed", &json!({"inputs": "a"}).to_string(), k);
        assert_eq!(st, 401, "key {k:?}: {text}");
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap()["error_type"],
            "Unauthorized"
        );
    }
    assert_eq!(s.get("/health").0, 200);
    // Still serving.
    let (st, _) = s.post_raw("/embed", &json!({"inputs": "still fine"}).to_string(), key);
    assert_eq!(st, 200);
}

#[test]
fn oversized_body_of_64_mib_is_refused() {
    use std::io::{Read, Write};
    let s = Server::start(&fixture("bert_mlm"), &[], &[]);
    // Raw socket: announce 64 MiB and send the first 3 MiB; the server must
    // answer 413 once past the 2 MB limit, without reading the rest.
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut sock = std::net::TcpStream::connect(&addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let len = 64usize << 20;
    write!(
        sock,
        "POST /embed HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    )
    .unwrap();
    let _ = sock.write_all(&vec![b'a'; 3 << 20]);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains('}') {
        match sock.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("reading the answer to a 64 MiB body: {e}"),
        }
    }
    let text = String::from_utf8_lossy(&got).to_string();
    assert!(text.starts_with("HTTP/1.1 413"), "64 MiB body: {text}");
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    let v: Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("413 body not JSON ({e}): {body}"));
    assert!(v["error"].as_str().unwrap().contains("length limit"), "{v}");
    assert_eq!(v["error_type"], "Validation");
    drop(sock);
    assert_eq!(s.get("/health").0, 200);
    assert_eq!(s.post("/embed", json!({"inputs": "ok"})).0, 200);
}

#[test]
fn concurrent_clients_get_their_single_request_answers() {
    let s = Arc::new(Server::start(MINILM, &[], &[]));
    let eng = Engine::load(MINILM, Device::Cpu).unwrap();
    // 400 requests of 1 to 120 words from 32 clients, each taking the next.
    let texts = Arc::new(varied_texts(400));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let handles: Vec<_> = (0..32)
        .map(|_| {
            let (s, texts, next) = (s.clone(), texts.clone(), next.clone());
            std::thread::spawn(move || {
                let mut got = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= texts.len() {
                        return got;
                    }
                    let v = s.post_ok("/embed", json!({"inputs": texts[i]}));
                    got.push((i, floats(&v[0])));
                }
            })
        })
        .collect();
    let mut answered = vec![false; texts.len()];
    let mut worst = 0f32;
    for h in handles {
        for (i, got) in h.join().unwrap() {
            worst = worst.max(max_abs_diff(&got, &library_embedding(&eng, &texts[i])));
            assert!(!answered[i], "request {i} answered twice");
            answered[i] = true;
        }
    }
    let (_, m) = s.get("/metrics");
    let max_in_batch: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("bertrt_max_requests_in_batch "))
        .unwrap()
        .parse()
        .unwrap();
    eprintln!("400 requests from 32 clients: max |diff| {worst:e}, up to {max_in_batch} requests per forward");
    let lost: Vec<usize> = (0..texts.len()).filter(|&i| !answered[i]).collect();
    assert!(lost.is_empty(), "requests lost: {lost:?}");
    assert!(
        worst <= 1e-6,
        "a batched answer differs from its single answer by {worst}"
    );
    assert!(
        max_in_batch > 1,
        "concurrent requests were never batched together"
    );
}

#[test]
fn panic_in_a_forward_fails_only_that_batch() {
    let s = Server::start(
        &fixture("bert_mlm"),
        &[],
        &[("BERTRT_SERVE_PANIC_ON_TEXT", "trigger the fault")],
    );
    let (st, v) = s.post("/embed", json!({"inputs": "trigger the fault"}));
    assert_eq!(st, 500, "{v}");
    assert!(v["error"].as_str().unwrap().contains("panicked"), "{v}");
    assert_eq!(v["error_type"], "Backend");
    assert_eq!(s.get("/health").0, 200);
    let ok = s.post_ok(
        "/embed",
        json!({"inputs": ["after the fault", "still here"]}),
    );
    assert_eq!(ok.as_array().unwrap().len(), 2);
}

#[test]
fn sigterm_answers_every_accepted_request_then_exits_0() {
    let mut s = Server::start(MINILM, &[], &[]);
    let base = s.base.clone();
    // 16 requests of 4 inputs of ~70 tokens: seconds of CPU work in all.
    let long: Vec<String> = (0..4)
        .map(|i| {
            format!(
                "{i} {}",
                "the quick brown fox jumps over the lazy dog ".repeat(7)
            )
        })
        .collect();
    let handles: Vec<_> = (0..16)
        .map(|_| {
            let (base, long) = (base.clone(), long.clone());
            std::thread::spawn(move || {
                match agent()
                    .post(&format!("{base}/embed"))
                    .set("content-type", "application/json")
                    .send_string(&json!({"inputs": long}).to_string())
                {
                    Ok(r) => r.status(),
                    Err(ureq::Error::Status(code, _)) => code,
                    Err(e) => {
                        eprintln!("transport error: {e}");
                        0
                    }
                }
            })
        })
        .collect();
    // Wait (bounded) until all 16 are in flight (17 with /metrics itself)
    // and none has finished, so SIGTERM meets them all accepted.
    let t = Instant::now();
    loop {
        let m = s.get("/metrics").1;
        assert!(
            !m.contains("route=\"/embed\",status=\"200\""),
            "a request finished before SIGTERM; make them longer"
        );
        let in_flight: u64 = m
            .lines()
            .find_map(|l| l.strip_prefix("bertrt_requests_in_flight "))
            .unwrap()
            .parse()
            .unwrap();
        if in_flight >= 17 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "requests never all in flight: {m}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    s.sigterm();
    let t = Instant::now();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let code = s.wait_exit();
    eprintln!(
        "16 in-flight requests answered and exited {:.1} s after SIGTERM",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(
        statuses,
        vec![200; 16],
        "in-flight requests at SIGTERM:\n{}",
        s.log.lock().unwrap()
    );
    assert_eq!(
        code,
        Some(0),
        "exit code after SIGTERM:\n{}",
        s.log.lock().unwrap()
    );
}

#[test]
fn over_the_concurrency_limit_gets_429() {
    let s = Arc::new(Server::start(
        MINILM,
        &["--max-concurrent-requests", "1"],
        &[],
    ));
    let long: Vec<String> = (0..32)
        .map(|i| {
            format!(
                "{i} {}",
                "the quick brown fox jumps over the lazy dog ".repeat(30)
            )
        })
        .collect();
    // Slow requests back to back until a probe has been refused: a probe
    // can take the slot first, and then that slow request is the one
    // refused (it must not end the test).
    let seen = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (s2, seen2) = (s.clone(), seen.clone());
    let slow = std::thread::spawn(move || {
        let t = Instant::now();
        let mut statuses = Vec::new();
        while !seen2.load(std::sync::atomic::Ordering::SeqCst)
            && t.elapsed() < Duration::from_secs(30)
        {
            statuses.push(s2.post("/embed", json!({"inputs": long})).0);
        }
        statuses
    });
    // While a slow request holds the only slot, others are refused.
    let t = Instant::now();
    let refused = loop {
        let (st, text) = s.get("/info");
        if st == 429 {
            break Some(text);
        }
        if slow.is_finished() || t.elapsed() > Duration::from_secs(30) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    seen.store(true, std::sync::atomic::Ordering::SeqCst);
    let text = refused.expect("no 429 while the only slot was taken");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error_type"], "Overloaded", "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("--max-concurrent-requests"),
        "{v}"
    );
    let statuses = slow.join().unwrap();
    assert!(
        statuses.contains(&200) && statuses.iter().all(|&st| st == 200 || st == 429),
        "slow requests: {statuses:?}"
    );
    assert_eq!(s.get("/info").0, 200, "slot not released");
}

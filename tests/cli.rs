//! The CLI as a user types it: each subcommand runs, its JSON parses, and bad
//! input gives a clear message and a non-zero exit.

mod common;

use serde_json::Value;
use std::process::{Command, Output, Stdio};

fn bertrt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bertrt"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn model(name: &str) -> String {
    common::model_dir(name).display().to_string()
}

fn json_ok(args: &[&str]) -> Value {
    let out = bertrt(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bertrt {args:?} failed: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bertrt {args:?}: stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn fails_with(args: &[&str], needle: &str) {
    let out = bertrt(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "bertrt {args:?} should fail");
    assert!(
        stderr.contains(needle),
        "bertrt {args:?}: expected {needle:?} in: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn info_reports_albert_sharing_savings() {
    let m = model("albert_mlm");
    let v = json_ok(&["info", "--model", &m, "--device", "cpu", "--format", "json"]);
    let v = &v[0];
    assert_eq!(v["model_type"], "albert");
    assert_eq!(v["architecture"], "AlbertForMaskedLM");
    assert!(v["parameters_if_unshared"].as_u64() > v["parameters_in_memory"].as_u64());
    assert_eq!(v["tokenizer"], "SentencePiece Unigram (spiece.model)");
}

/// `info` spells names and values as config.json does, not as Rust Debug.
#[test]
fn info_spells_config_values_as_config_json() {
    for (name, model_type, act, sharing) in [
        ("xlmr_model", "xlm-roberta", "gelu", "all"),
        ("roberta_cls", "roberta", "gelu_pytorch_tanh", "all"),
        ("albert_share_ffn", "albert", "gelu_new", "ffn"),
    ] {
        let v = json_ok(&[
            "info",
            "--model",
            &model(name),
            "--device",
            "cpu",
            "--format",
            "json",
        ]);
        let v = &v[0];
        assert_eq!(v["model_type"], model_type, "{name}");
        assert_eq!(v["hidden_act"], act, "{name}");
        assert_eq!(v["albert_sharing"], sharing, "{name}");
    }
}

#[test]
fn tokenize_roberta() {
    let m = model("roberta_mlm");
    let v = json_ok(&[
        "tokenize",
        "--model",
        &m,
        "--device",
        "cpu",
        "--format",
        "json",
        "It was a great day",
    ]);
    let v = &v[0];
    assert_eq!(v["tokens"][0], "<s>");
    assert_eq!(
        v["input_ids"].as_array().unwrap().len(),
        v["offsets"].as_array().unwrap().len()
    );
}

#[test]
fn embed_formats() {
    let m = model("bert_model_f16");
    let v = json_ok(&[
        "embed",
        "--model",
        &m,
        "--device",
        "cpu",
        "--format",
        "json",
        "hello world",
        "a second text",
    ]);
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[0].as_array().unwrap().len(), 32);
    let v = json_ok(&[
        "embed",
        "--model",
        &m,
        "--device",
        "cpu",
        "--format",
        "json",
        "--pooling",
        "none",
        "hello world",
    ]);
    assert!(v[0][0].is_array(), "per-token vectors");
    let out = bertrt(&[
        "embed", "--model", &m, "--device", "cpu", "--format", "jsonl", "a", "b", "c",
    ]);
    assert!(out.status.success());
    let lines: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(lines.len(), 3);
    for l in lines {
        serde_json::from_str::<Value>(l).unwrap();
    }
    let npy = std::env::temp_dir().join(format!("bertrt-cli-{}.npy", std::process::id()));
    let out = bertrt(&[
        "embed",
        "--model",
        &m,
        "--device",
        "cpu",
        "--format",
        "npy",
        "-o",
        npy.to_str().unwrap(),
        "a",
        "b",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&npy).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    assert_eq!(bytes.len() % 64, (2 * 32 * 4) % 64);
    assert!(String::from_utf8_lossy(&bytes[..128]).contains("'shape': (2, 32)"));
}

#[test]
fn embed_reads_jsonl_and_handles_bad_lines() {
    let m = model("bert_model_f16");
    let dir = std::env::temp_dir().join(format!("bertrt-cli-jsonl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("in.jsonl");
    std::fs::write(&f, "{\"text\": \"one\"}\nnot json\n{\"text\": \"three\"}\n").unwrap();
    let fs = f.to_str().unwrap();
    fails_with(
        &["embed", "--model", &m, "--device", "cpu", "--input", fs],
        "line 2: invalid JSON",
    );
    let v = json_ok(&[
        "embed",
        "--model",
        &m,
        "--device",
        "cpu",
        "--format",
        "json",
        "--input",
        fs,
        "--on-error",
        "skip",
    ]);
    assert_eq!(v.as_array().unwrap().len(), 2);
    let bad = dir.join("bad.txt");
    std::fs::write(&bad, b"fine\n\xff\xfe broken\n").unwrap();
    fails_with(
        &[
            "embed",
            "--model",
            &m,
            "--device",
            "cpu",
            "--input",
            bad.to_str().unwrap(),
        ],
        "line 2: invalid UTF-8",
    );
}

#[test]
fn fill_mask_detect_classify() {
    let v = json_ok(&[
        "fill-mask",
        "--model",
        &model("bert_mlm"),
        "--device",
        "cpu",
        "--format",
        "json",
        "Paris is the [MASK] of France.",
    ]);
    assert_eq!(v[0].as_array().unwrap().len(), 5);
    fails_with(
        &[
            "fill-mask",
            "--model",
            &model("bert_mlm"),
            "--device",
            "cpu",
            "no mask",
        ],
        "[MASK]",
    );
    let v = json_ok(&[
        "detect",
        "--model",
        &model("electra_disc"),
        "--device",
        "cpu",
        "--format",
        "json",
        "the chef ate the meal",
    ]);
    assert!(v[0][0]["probability"].as_f64().is_some());
    fails_with(
        &[
            "detect",
            "--model",
            &model("bert_mlm"),
            "--device",
            "cpu",
            "x",
        ],
        "ElectraForPreTraining",
    );
    let v = json_ok(&[
        "classify",
        "--model",
        &model("bert_cls"),
        "--device",
        "cpu",
        "--format",
        "json",
        "great movie",
    ]);
    assert_eq!(v[0].as_array().unwrap().len(), 3);
    let v = json_ok(&[
        "classify",
        "--tokens",
        "--model",
        &model("bert_tokcls"),
        "--device",
        "cpu",
        "--format",
        "json",
        "John lives in Paris",
    ]);
    assert!(v[0].is_array());
    fails_with(
        &[
            "classify",
            "--model",
            &model("bert_cls"),
            "--device",
            "cpu",
            "   ",
        ],
        "empty text",
    );
}

/// Argument errors are found before any model is loaded: the model path
/// here does not exist, and the argument is what gets named.
#[test]
fn arguments_are_validated_before_loading() {
    let nowhere = "/no/such/model";
    fails_with(
        &[
            "classify",
            "--model",
            nowhere,
            "x",
            "--aggregation",
            "simple",
        ],
        "--aggregation goes with --tokens",
    );
    fails_with(
        &[
            "classify", "--model", nowhere, "x", "--tokens", "--pair", "y",
        ],
        "--pair is for sequence classification",
    );
    fails_with(
        &["fill-mask", "--model", nowhere, "[MASK]", "--top-k", "0"],
        "--top-k must be at least 1",
    );
    fails_with(
        &["detect", "--model", nowhere, "x", "--format", "npy"],
        "--format npy is only for embed",
    );
    fails_with(
        &["embed", "--model", nowhere, "x", "--format", "npy"],
        "--format npy needs -o FILE",
    );
    fails_with(
        &["embed", "--model", nowhere, "x", "--pooling", "max"],
        "--pooling",
    );
}

#[test]
fn bad_model_and_device() {
    fails_with(&["info", "--model", "/no/such/folder"], "no such folder");
    fails_with(
        &["info", "--model", &model("bert_mlm"), "--device", "tpu"],
        "--device: input: device 'tpu': use auto, cpu, cuda or cuda:N",
    );
}

#[test]
fn qa_single_and_jsonl() {
    let m = model("bert_qa");
    let v = json_ok(&[
        "qa",
        "--model",
        &m,
        "--device",
        "cpu",
        "--format",
        "json",
        "--question",
        "Who wrote Moby Dick?",
        "--context",
        "Herman Melville wrote Moby Dick in 1851.",
    ]);
    assert!(v[0]["answer"].is_string() && v[0]["start"].is_u64());
    let f = std::env::temp_dir().join(format!("bertrt-cli-qa-{}.jsonl", std::process::id()));
    std::fs::write(
        &f,
        "{\"question\": \"Who?\", \"context\": \"Herman Melville wrote it.\"}\n{\"question\": \"When?\"}\n",
    )
    .unwrap();
    let fs = f.to_str().unwrap();
    fails_with(
        &["qa", "--model", &m, "--device", "cpu", "--input", fs],
        "line 2: no string field 'context'",
    );
    let v = json_ok(&[
        "qa",
        "--model",
        &m,
        "--device",
        "cpu",
        "--format",
        "json",
        "--input",
        fs,
        "--on-error",
        "skip",
        "--top-k",
        "2",
        "--handle-impossible-answer",
    ]);
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0].as_array().unwrap().len(), 2);
    fails_with(
        &[
            "qa",
            "--model",
            &model("bert_cls"),
            "--device",
            "cpu",
            "--question",
            "q",
            "--context",
            "c",
        ],
        "ForQuestionAnswering",
    );
}

#[test]
fn uncached_hub_id_offline_and_unreachable() {
    let cache = std::env::temp_dir().join(format!("bertrt-cli-hub-{}", std::process::id()));
    std::fs::create_dir_all(&cache).unwrap();
    let run = |envs: &[(&str, &str)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_bertrt"));
        c.args([
            "info",
            "--model",
            "no-such-org/no-such-model",
            "--device",
            "cpu",
        ])
        .env("HF_HUB_CACHE", &cache)
        .stdin(Stdio::null());
        for (k, v) in envs {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let e = run(&[("HF_HUB_OFFLINE", "1")]);
    assert!(
        e.contains("HF_HUB_OFFLINE=1")
            && e.contains("looked in")
            && e.contains("models--no-such-org--no-such-model"),
        "{e}"
    );
    // A closed port on loopback stands in for "no network": nothing leaves the machine.
    let e = run(&[
        ("HF_HUB_OFFLINE", "0"),
        ("HF_ENDPOINT", "http://127.0.0.1:9"),
    ]);
    assert!(
        e.contains("downloading it failed") && e.contains("looked in"),
        "{e}"
    );
}

/// `bench` times the bare encoder unless `--head` asks for the whole forward,
/// and its report says which (compare_torch.py times PyTorch to match).
#[test]
fn bench_times_the_bare_encoder_unless_head() {
    let m = model("bert_mlm");
    let args = [
        "bench", "--model", &m, "--device", "cpu", "--batch", "2", "--seq", "8", "--warmup", "0",
        "--iters", "1", "--format", "json",
    ];
    let bare = json_ok(&args);
    assert_eq!(bare["timed"], "encoder", "{bare}");
    assert_eq!(bare["cells"].as_array().unwrap().len(), 1, "{bare}");
    let with_head = json_ok(&[&args[..], &["--head"]].concat());
    assert_eq!(with_head["timed"], "forward_with_heads", "{with_head}");
    // On the CPU: no graphs and no device copies to report; the flag that
    // turns graphs off is accepted by every command taking engine options.
    assert_eq!(bare["cuda_graphs"], false, "{bare}");
    assert!(
        bare["cells"][0]["bytes_to_device_per_iter"].is_null(),
        "{bare}"
    );
    let no_graphs = json_ok(&[&args[..], &["--no-cuda-graphs"]].concat());
    assert_eq!(
        no_graphs["cells"].as_array().unwrap().len(),
        1,
        "{no_graphs}"
    );
}

/// `--l2-persist` is a CUDA cache setting: on the CPU the report says it had
/// no effect (a warning) and records no L2 state; unasked, nothing is said.
#[test]
fn bench_l2_persist_on_the_cpu_is_a_noted_no_op() {
    let m = model("albert_mlm");
    let args = [
        "bench", "--model", &m, "--device", "cpu", "--batch", "1", "--seq", "8", "--warmup", "0",
        "--iters", "1", "--format", "json",
    ];
    let plain = json_ok(&args);
    assert!(plain["l2_persist"].is_null(), "{plain}");
    let on = json_ok(&[&args[..], &["--l2-persist", "on"]].concat());
    assert!(on["l2_persist"].is_null(), "{on}");
    let warned = on["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w.as_str().unwrap().contains("--l2-persist has no effect"));
    assert!(warned, "{on}");
}

/// `info` and `detect` on a folder whose tokenizer.json makes the tokenizers
/// crate panic (tests/fixtures/broken/decoder_panics_tokenizers.json): a clean
/// error naming the file, not exit 101 with a panic message.
#[test]
fn tokenizer_json_that_panics_tokenizers_fails_cleanly() {
    for (cmd, fixture) in [("info", "bert_mlm"), ("detect", "electra_disc")] {
        let dir = std::env::temp_dir().join(format!(
            "bertrt-cli-decoder-panic-{cmd}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for e in std::fs::read_dir(common::model_dir(fixture)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
        }
        std::fs::copy(
            common::fixtures().join("broken/decoder_panics_tokenizers.json"),
            dir.join("tokenizer.json"),
        )
        .unwrap();
        let d = dir.display().to_string();
        let mut args = vec![cmd, "--model", &d, "--device", "cpu"];
        if cmd == "detect" {
            args.push("the chef ate the meal");
        }
        let out = bertrt(&args);
        assert_ne!(out.status.code(), Some(101), "bertrt {args:?} panicked");
        fails_with(&args, &dir.join("tokenizer.json").display().to_string());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// `bertrt info` on the CPU with a dtype and an optional forced fallback:
/// (backend line, stderr).
fn cpu_backend(dtype: &str, force: Option<&str>) -> (String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bertrt"));
    cmd.args([
        "info",
        "--device",
        "cpu",
        "--dtype",
        dtype,
        "--threads",
        "2",
        "-m",
        &model("bert_mlm"),
    ]);
    cmd.env_remove("BERTRT_CPU_FORCE");
    if let Some(f) = force {
        cmd.env("BERTRT_CPU_FORCE", f);
    }
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "info --dtype {dtype} failed: {stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let line = stdout
        .lines()
        .find(|l| l.starts_with("backend"))
        .unwrap_or_else(|| panic!("no backend line in {stdout}"))
        .to_string();
    (line, stderr)
}

#[test]
fn the_cpu_path_is_reported_and_bf16_falls_back_with_a_message() {
    // AMX where the CPU reports it (build.rs's cfg(host_amx)), else the
    // vdpbf16ps tiles on AMD (cfg(host_amd)), else the widened AVX512-BF16
    // tiles (this workplace's VMs have had all three).
    let (dot, widened) = (
        "bf16, avx512-bf16 vdpbf16ps tiles",
        "bf16, avx512-bf16 tiles (widened",
    );
    let no_amx = if cfg!(host_amd) { dot } else { widened };
    let (line, err) = cpu_backend("bf16", None);
    let want = if cfg!(host_amx) {
        "bf16, amx tiles"
    } else {
        no_amx
    };
    assert!(line.contains(want) && line.contains("2 threads"), "{line}");
    assert!(err.is_empty(), "unexpected stderr: {err}");
    let (line, _) = cpu_backend("bf16", Some("no-amx"));
    assert!(line.contains(no_amx), "{line}");
    let (line, _) = cpu_backend("bf16", Some("no-dot"));
    assert!(line.contains(widened), "{line}");
    let (line, err) = cpu_backend("bf16", Some("no-bf16"));
    assert!(line.contains("f32, avx512 tiles"), "{line}");
    assert!(
        err.contains("dtype bf16")
            && err.contains("BERTRT_CPU_FORCE=no-bf16")
            && err.contains("computing in f32"),
        "{err}"
    );
    let (line, err) = cpu_backend("bf16", Some("portable"));
    assert!(line.contains("f32, portable gemm"), "{line}");
    assert!(err.contains("no AVX-512"), "{err}");
    let (line, _) = cpu_backend("f32", None);
    assert!(line.contains("f32, avx512 tiles"), "{line}");
}

#[test]
fn dtype_and_device_pairings_are_refused_naming_both() {
    let out = bertrt(&[
        "embed",
        "--device",
        "cpu",
        "--dtype",
        "f16",
        "-m",
        &model("bert_mlm"),
        "hi",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("f16") && err.contains("cpu"),
        "{err}"
    );
    let out = bertrt(&["embed", "--dtype", "int8", "-m", &model("bert_mlm"), "hi"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--dtype") && err.contains("int8"),
        "{err}"
    );
    let out = bertrt(&["embed", "--threads", "0", "-m", &model("bert_mlm"), "hi"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--threads"), "{err}");
}

/// `bertrt embed --input FILE | head -1`: the reader closes the pipe long
/// before the output ends. The CLI must stop quietly with status 0, as Unix
/// tools do, not panic inside `println!` (status 101, "failed printing to
/// stdout").
#[test]
fn a_closed_stdout_ends_the_cli_quietly() {
    use std::io::{BufRead, BufReader};
    let input = std::env::temp_dir().join(format!("bertrt-cli-many-{}.txt", std::process::id()));
    // About 4 MB of JSONL out, far beyond a pipe's buffer.
    let text: String = (0..20_000).map(|i| format!("line number {i}\n")).collect();
    std::fs::write(&input, text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_bertrt"))
        .args(["embed", "--device", "cpu", "--format", "jsonl", "--model"])
        .arg(model("bert_mlm"))
        .arg("--input")
        .arg(&input)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with('['), "first line: {first}");
    // The reader is dropped here: the pipe is closed.
    let out = child.wait_with_output().unwrap();
    std::fs::remove_file(&input).ok();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("panicked"),
        "status {:?} after the reader left; stderr: {stderr}",
        out.status.code()
    );
}

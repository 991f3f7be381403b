//! Shared test helpers: fixture paths, golden tensors, tolerant comparison
//! that prints the first mismatches.
#![allow(dead_code)]

pub mod fp16;
pub mod graphs;
pub mod record;
pub mod seam_kernels;
pub mod seam_tensor_cores;
pub mod server;
pub mod wants;

use std::collections::HashMap;
use std::path::PathBuf;

/// `bertrt info --format json --device cpu -m DIR ARGS...` as JSON (the
/// binary this test run built); panics with its stderr when it fails.
pub fn info_json(dir: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let mut all: Vec<&std::ffi::OsStr> = ["info", "--format", "json", "--device", "cpu", "-m"]
        .iter()
        .map(std::ffi::OsStr::new)
        .collect();
    all.push(dir.as_os_str());
    all.extend(args.iter().map(std::ffi::OsStr::new));
    bertrt_json(&all)
}

/// `bertrt ARGS` (a command printing JSON), which must succeed: its output.
pub fn bertrt_json<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bertrt"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn model_dir(name: &str) -> PathBuf {
    fixtures().join("models").join(name)
}

/// Every model folder under tests/fixtures/models, sorted: tests iterate over
/// these rather than a hand-kept list, so a new fixture is checked at once.
/// Panics on fewer than the 20 committed ones, so a moved folder cannot make
/// the loops vacuous.
pub fn fixture_models() -> Vec<String> {
    let root = fixtures().join("models");
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap())
        .filter(|e| e.path().join("config.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(
        names.len() >= 20,
        "{}: only {} model folders: {names:?}",
        root.display(),
        names.len()
    );
    names
}

/// Runs `check` on every fixture model, on as many threads as there are
/// cores, each model caught on its own; panics once at the end naming every
/// model that failed.
pub fn for_each_fixture_model(check: impl Fn(&str) + Sync) {
    let names = fixture_models();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|scope| {
        for _ in 0..workers.min(names.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(name) = names.get(i) else { break };
                let t = std::time::Instant::now();
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(name))) {
                    Ok(()) => eprintln!("{name}: ok ({:.1}s)", t.elapsed().as_secs_f64()),
                    Err(e) => {
                        let msg = e
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        failed.lock().unwrap().push(format!("{name}: {msg}"));
                    }
                }
            });
        }
    });
    let mut failed = failed.into_inner().unwrap();
    failed.sort();
    assert!(
        failed.is_empty(),
        "{} of {} fixture models failed:\n{}",
        failed.len(),
        names.len(),
        failed.join("\n")
    );
}

/// A golden tensor as f64 values plus its shape.
pub struct Golden {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

pub fn load_golden(name: &str) -> HashMap<String, Golden> {
    let path = fixtures()
        .join("golden")
        .join(format!("{name}.safetensors"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out = HashMap::new();
    for (k, v) in st.tensors() {
        let data: Vec<f64> = match v.dtype() {
            safetensors::Dtype::F32 => v
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
                .collect(),
            safetensors::Dtype::I64 => v
                .data()
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64)
                .collect(),
            d => panic!("golden {k}: unexpected dtype {d:?}"),
        };
        out.insert(
            k,
            Golden {
                shape: v.shape().to_vec(),
                data,
            },
        );
    }
    out
}

/// Compares `got` with `want` element-wise: |got - want| <= atol + rtol*|want|.
/// On failure returns a report with the max error and the first mismatches.
pub fn compare(what: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) -> Result<f64, String> {
    if got.len() != want.len() {
        return Err(format!(
            "{what}: length {} != golden {}",
            got.len(),
            want.len()
        ));
    }
    let mut max_err = 0f64;
    let mut bad = Vec::new();
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        if err.is_nan() || err > atol + rtol * w.abs() {
            if bad.len() < 8 {
                bad.push(format!("  [{i}] got {g} want {w} (err {err:.3e})"));
            }
            max_err = f64::INFINITY.min(if err.is_nan() {
                f64::INFINITY
            } else {
                max_err.max(err)
            });
        }
        if !err.is_nan() {
            max_err = max_err.max(err);
        }
    }
    if bad.is_empty() {
        Ok(max_err)
    } else {
        Err(format!(
            "{what}: max |err| {max_err:.3e} > {atol:e} + {rtol:e}*|ref|; first mismatches:\n{}",
            bad.join("\n")
        ))
    }
}

/// Rows of a padded golden `[B, L, ...]` tensor that are real tokens, packed.
pub fn unpad(g: &Golden, lens: &[usize]) -> Vec<f64> {
    let (b, l) = (g.shape[0], g.shape[1]);
    let w: usize = g.shape[2..].iter().product();
    let mut out = Vec::new();
    for (s, len) in lens.iter().enumerate().take(b) {
        out.extend_from_slice(&g.data[s * l * w..(s * l + len) * w]);
    }
    out
}

/// The batch of `{prefix}input_ids` (unpadded by `{prefix}attention_mask`)
/// and its sequence lengths.
pub fn golden_batch(
    g: &HashMap<String, Golden>,
    prefix: &str,
    cfg: &bertrt::config::ModelConfig,
) -> (bertrt::batch::Batch, Vec<usize>) {
    let ids = &g[&format!("{prefix}input_ids")];
    let mask = &g[&format!("{prefix}attention_mask")];
    let types = &g[&format!("{prefix}token_type_ids")];
    let (b, l) = (ids.shape[0], ids.shape[1]);
    let mut seqs = Vec::new();
    let mut lens = Vec::new();
    for s in 0..b {
        let n = (0..l).filter(|&j| mask.data[s * l + j] != 0.0).count();
        lens.push(n);
        seqs.push(bertrt::batch::SequenceIds {
            input_ids: (0..n).map(|j| ids.data[s * l + j] as u32).collect(),
            token_type_ids: (0..n).map(|j| types.data[s * l + j] as u32).collect(),
        });
    }
    (bertrt::batch::Batch::pack(&seqs, cfg).unwrap(), lens)
}

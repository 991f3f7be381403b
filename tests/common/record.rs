//! Figures the tests measure (max errors, cosines) into the run's record.
//!
//! `figure(line)` prints the line to stderr and, when `BERTRT_RECORD_DIR` is
//! set and not empty (scripts/gpu_check_remote.sh sets it), appends
//! `<test binary>\t<test name>\t<line>` to `$BERTRT_RECORD_DIR/figures.tsv`,
//! which `scripts/gpu-check --report` puts in docs/hardware/<date>-<gpu>.md.

use std::io::Write;

pub const RECORD_DIR_VAR: &str = "BERTRT_RECORD_DIR";
pub const FIGURES_FILE: &str = "figures.tsv";

/// The test binary's target name: cargo's `name-<16 hex>` with the hash cut
/// (the GPU bundle's copies have none).
fn binary_name() -> String {
    let exe = std::env::current_exe().ok();
    let stem = exe
        .as_deref()
        .and_then(|p| p.file_stem())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "?".into());
    match stem.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            name.to_string()
        }
        _ => stem,
    }
}

/// libtest names each test's thread after the test.
fn test_name() -> String {
    match std::thread::current().name() {
        Some(n) if n != "main" => n.to_string(),
        _ => "-".into(),
    }
}

/// One figure line: to stderr, and to the record when one is being made.
pub fn figure(line: &str) {
    eprintln!("{line}");
    let Some(dir) = std::env::var_os(RECORD_DIR_VAR).filter(|d| !d.is_empty()) else {
        return;
    };
    let path = std::path::Path::new(&dir).join(FIGURES_FILE);
    let entry = format!(
        "{}\t{}\t{}\n",
        binary_name(),
        test_name(),
        line.replace(['\t', '\n'], " ")
    );
    // One write of one short line in append mode: lines from parallel tests
    // do not interleave. A record that silently lacks figures would mislead,
    // so failing to write fails the test.
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(entry.as_bytes()))
        .unwrap_or_else(|e| panic!("{RECORD_DIR_VAR}: cannot append to {}: {e}", path.display()));
}

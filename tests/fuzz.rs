//! The fuzz harness (tests/fuzz_harness) as a test: a short deterministic run
//! over every target, and every committed crash input under
//! tests/fixtures/fuzz/<target>/ replayed as a regression case.
//! `scripts/fuzz.sh` runs the same targets for 10 minutes.

mod fuzz_harness;

use fuzz_harness::{all_targets, fuzz_target, run_one, saved_inputs, targets::scratch_root};
use std::path::PathBuf;
use std::time::Duration;

#[global_allocator]
static ALLOC: fuzz_harness::CapAlloc = fuzz_harness::CapAlloc;

/// Inputs per target in the smoke run, and the time each may take at most
/// (the whole test stays under 30 s in the test profile).
const SMOKE_INPUTS: u64 = 500;
const SMOKE_TIME: Duration = Duration::from_millis(2000);

fn crash_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz")
}

/// One test (not one per target): the harness's panic hook and watchdog are
/// process-wide and the targets share scratch folders.
#[test]
fn fuzz_smoke_and_replay() {
    let targets = all_targets();
    // New crashes go to a scratch folder, not into the source tree.
    let new_crashes = scratch_root().join("crashes");
    let mut failures = Vec::new();
    let mut replayed = 0;
    for t in &targets {
        for (path, seed) in saved_inputs(&crash_dir(), t) {
            let input = std::fs::read(&path).unwrap();
            replayed += 1;
            if let Err(msg) = run_one(t, seed, &input, &new_crashes) {
                failures.push(format!("{} (replay {}): {msg}", t.name, path.display()));
            }
        }
        let r = fuzz_target(t, 0x5eed, SMOKE_INPUTS, SMOKE_TIME, &new_crashes);
        eprintln!(
            "fuzz smoke {}: {} inputs ({} accepted), {} crashes",
            r.target,
            r.tried,
            r.accepted,
            r.crashes.len()
        );
        assert!(r.tried > 0, "{}: no input was run", t.name);
        for c in r.crashes.iter().filter(|c| c.saved.is_some()) {
            failures.push(format!(
                "{}: {} (input saved to {})",
                c.target,
                c.message,
                c.saved.as_ref().unwrap().display()
            ));
        }
    }
    eprintln!("fuzz smoke: replayed {replayed} committed crash inputs");
    if failures.is_empty() {
        let _ = std::fs::remove_dir_all(scratch_root());
    }
    assert!(failures.is_empty(), "panics:\n{}", failures.join("\n"));
}

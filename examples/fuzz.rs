//! The fuzz harness (tests/fuzz_harness) for long runs: `scripts/fuzz.sh`.
//!
//! fuzz [--seconds N] [--seed S] [--save DIR] [--targets a,b,...]
//! Splits N seconds (default 600) evenly across the targets, prints per target
//! the inputs tried and crashes found, saves one input per panic site under
//! DIR/<target>/ (default tests/fixtures/fuzz), and exits 1 if any crashed.

#[path = "../tests/fuzz_harness/mod.rs"]
mod fuzz_harness;

use std::path::PathBuf;
use std::time::Duration;

#[global_allocator]
static ALLOC: fuzz_harness::CapAlloc = fuzz_harness::CapAlloc;

fn main() {
    let mut seconds = 600u64;
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(1);
    let mut save = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz");
    let mut only: Option<Vec<String>> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next().unwrap_or_else(|| {
                eprintln!("fuzz: {a} needs a value");
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "--seconds" => seconds = value().parse().expect("--seconds: a number"),
            "--seed" => seed = value().parse().expect("--seed: a number"),
            "--save" => save = PathBuf::from(value()),
            "--targets" => only = Some(value().split(',').map(str::to_string).collect()),
            _ => {
                eprintln!("fuzz: unknown argument {a}");
                std::process::exit(2)
            }
        }
    }
    let targets: Vec<_> = fuzz_harness::all_targets()
        .into_iter()
        .filter(|t| only.as_ref().is_none_or(|o| o.iter().any(|n| n == t.name)))
        .collect();
    if targets.is_empty() {
        eprintln!("fuzz: no such target");
        std::process::exit(2);
    }
    let per_target = Duration::from_secs(seconds) / targets.len() as u32;
    println!(
        "fuzz: seed {seed}, {} targets, {per_target:?} each",
        targets.len()
    );
    let (mut total, mut crashes) = (0u64, 0usize);
    for t in &targets {
        let r = fuzz_harness::fuzz_target(t, seed, u64::MAX, per_target, &save);
        total += r.tried;
        crashes += r.crashes.len();
        println!(
            "{:<17} inputs {:>9}  accepted {:>9}  crashes {:>4}",
            r.target,
            r.tried,
            r.accepted,
            r.crashes.len()
        );
        for c in r.crashes.iter().filter(|c| c.saved.is_some()) {
            println!(
                "    {}\n    saved {}",
                c.message,
                c.saved.as_ref().unwrap().display()
            );
        }
    }
    println!("total: inputs {total}, crashes {crashes}");
    let _ = std::fs::remove_dir_all(fuzz_harness::targets::scratch_root());
    if crashes > 0 {
        std::process::exit(1);
    }
}

//! A mutation-loop fuzzer on stable Rust (cargo-fuzz needs nightly).
//!
//! Each target parses one kind of untrusted file (or batch input) through our
//! real entry points. Inputs are the committed fixtures, mutated: bit flips,
//! byte insert/delete, truncation, splicing, interesting integers (as bytes
//! and as decimal text), and for JSON removed, duplicated or re-valued fields.
//! An input passes when the target returns (Ok or Err) without panicking,
//! within [`INPUT_TIMEOUT`], and without asking for one allocation over
//! [`ALLOC_CAP`]. A panicking input is saved (under `<save>/<target>/`); a
//! hang or an absurd allocation saves the input and ends the process, since
//! neither can be caught.
//!
//! Used by `tests/fuzz.rs` (the deterministic smoke run and the replay of
//! saved crashes) and `examples/fuzz.rs` (`scripts/fuzz.sh`).
#![allow(dead_code)]

pub mod mutate;
pub mod targets;

use std::alloc::{GlobalAlloc, Layout, System};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

pub use targets::{all_targets, Target};

/// Longest one input may run before it counts as a hang. Our parsers take
/// milliseconds on these fixture-sized inputs.
pub const INPUT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest single allocation an input may ask for. The fixtures are at most a
/// few hundred KB; the pickle reader's own cap on a tensor repeated by
/// stride-0 views is 1 GiB, so that is allowed and anything over it is a
/// length taken from the file without a check.
pub const ALLOC_CAP: usize = (1 << 30) + (1 << 20);

/// The input under test, for the watchdog and the allocator to save.
struct Current {
    target: &'static str,
    seed: usize,
    input: Vec<u8>,
    ext: &'static str,
    started: Instant,
    save_dir: PathBuf,
}

static CURRENT: Mutex<Option<Current>> = Mutex::new(None);
/// Set while a target runs on this process's fuzzing thread.
static IN_TARGET: AtomicBool = AtomicBool::new(false);
static PANIC_MSG: Mutex<Option<String>> = Mutex::new(None);

/// Refuses single allocations over [`ALLOC_CAP`], after saving the input
/// that asked (the process then aborts: "memory allocation ... failed").
pub struct CapAlloc;

static OVERSIZE_SEEN: AtomicBool = AtomicBool::new(false);

// SAFETY: every method forwards to `System` unchanged, except that an
// oversized request returns null, which the GlobalAlloc contract allows.
unsafe impl GlobalAlloc for CapAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOC_CAP && IN_TARGET.load(Ordering::Relaxed) {
            report_oversize(layout.size());
            return std::ptr::null_mut();
        }
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOC_CAP && IN_TARGET.load(Ordering::Relaxed) {
            report_oversize(layout.size());
            return std::ptr::null_mut();
        }
        // SAFETY: as in alloc.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: ptr came from System with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > ALLOC_CAP && IN_TARGET.load(Ordering::Relaxed) {
            report_oversize(new_size);
            return std::ptr::null_mut();
        }
        // SAFETY: as in alloc.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn report_oversize(size: usize) {
    // Once: saving allocates (small amounts), and the process aborts next.
    if OVERSIZE_SEEN.swap(true, Ordering::SeqCst) {
        return;
    }
    if let Ok(cur) = CURRENT.try_lock() {
        if let Some(c) = cur.as_ref() {
            let p = save_input(c, "oom");
            eprintln!(
                "fuzz: target {} asked for {size} bytes in one allocation; input saved to {}",
                c.target,
                p.display()
            );
        }
    }
}

fn hash(bytes: &[u8]) -> u64 {
    // FNV-1a: a stable name for a saved input.
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

fn save_input(c: &Current, kind: &str) -> PathBuf {
    let dir = c.save_dir.join(c.target);
    let _ = std::fs::create_dir_all(&dir);
    let p = dir.join(format!(
        "{kind}-{:016x}-s{}.{}",
        hash(&c.input),
        c.seed,
        c.ext
    ));
    let _ = std::fs::write(&p, &c.input);
    p
}

static SETUP: Once = Once::new();

/// Installs the panic hook (quiet inside targets; it keeps the message) and
/// the hang watchdog. Must run before the library installs its own hook, so
/// that one (panic_guard) wraps this one.
fn setup() {
    SETUP.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_TARGET.load(Ordering::Relaxed) {
                return previous(info);
            }
            *PANIC_MSG.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(bertrt::panic_guard::describe(info));
        }));
        std::thread::spawn(|| loop {
            std::thread::sleep(Duration::from_millis(200));
            let cur = CURRENT.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = cur.as_ref() {
                if c.started.elapsed() > INPUT_TIMEOUT {
                    let p = save_input(c, "hang");
                    eprintln!(
                        "fuzz: target {} ran over {INPUT_TIMEOUT:?} on one input; saved to {}",
                        c.target,
                        p.display()
                    );
                    std::process::exit(3);
                }
            }
        });
    });
}

/// A panicking input.
pub struct Crash {
    pub target: &'static str,
    pub message: String,
    pub input: Vec<u8>,
    pub saved: Option<PathBuf>,
}

/// What one target's run did.
pub struct Report {
    pub target: &'static str,
    pub tried: u64,
    /// Inputs the target accepted (Ok): how many mutants still parse.
    pub accepted: u64,
    /// Every panicking input (the first per panic site is saved).
    pub crashes: Vec<Crash>,
}

/// Runs `target` on one input under catch_unwind; Err is the panic message.
pub fn run_one(
    target: &Target,
    seed: usize,
    input: &[u8],
    save_dir: &Path,
) -> Result<bool, String> {
    setup();
    *CURRENT.lock().unwrap_or_else(|p| p.into_inner()) = Some(Current {
        target: target.name,
        seed,
        input: input.to_vec(),
        ext: target.ext,
        started: Instant::now(),
        save_dir: save_dir.to_path_buf(),
    });
    *PANIC_MSG.lock().unwrap_or_else(|p| p.into_inner()) = None;
    IN_TARGET.store(true, Ordering::SeqCst);
    let result = catch_unwind(AssertUnwindSafe(|| (target.run)(input, seed)));
    IN_TARGET.store(false, Ordering::SeqCst);
    *CURRENT.lock().unwrap_or_else(|p| p.into_inner()) = None;
    match result {
        Ok(r) => {
            if let (Err(e), Some(_)) = (&r, std::env::var_os("BERTRT_FUZZ_VERBOSE")) {
                eprintln!("fuzz {}: rejected: {e}", target.name);
            }
            Ok(r.is_ok())
        }
        Err(_) => Err(PANIC_MSG
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_else(|| "panicked (no message)".into())),
    }
}

/// Mutates `target`'s seeds until `max_inputs` or `max_time`, whichever comes
/// first. Same `rng_seed`, same inputs in the same order.
pub fn fuzz_target(
    target: &Target,
    rng_seed: u64,
    max_inputs: u64,
    max_time: Duration,
    save_dir: &Path,
) -> Report {
    let start = Instant::now();
    let mut m = mutate::Mutator::new(rng_seed ^ hash(target.name.as_bytes()));
    // Mutants that parsed (Ok) are kept as further starting points: they are
    // still valid enough to reach deeper code.
    let mut pool: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut report = Report {
        target: target.name,
        tried: 0,
        accepted: 0,
        crashes: Vec::new(),
    };
    let mut sites: Vec<String> = Vec::new();
    while report.tried < max_inputs && start.elapsed() < max_time {
        let (seed, base) = if !pool.is_empty() && m.below(4) == 0 {
            pool[m.below(pool.len())].clone()
        } else {
            let i = m.below(target.seeds.len());
            (i, target.seeds[i].clone())
        };
        let f = target.format;
        let input = match f.structured {
            Some(structured) if m.below(2) == 0 => structured(&mut m, base),
            _ => m.mutate(base, &target.seeds, f.json, (f.focus)(&target.seeds[seed])),
        };
        report.tried += 1;
        match run_one(target, seed, &input, save_dir) {
            Ok(true) => {
                report.accepted += 1;
                if pool.len() < 256 {
                    pool.push((seed, input));
                }
            }
            Ok(false) => {}
            Err(message) => {
                // One saved input per panic site (file:line).
                let site = message.split(": ").next().unwrap_or("").to_string();
                let saved = if sites.contains(&site) {
                    None
                } else {
                    sites.push(site);
                    let c = Current {
                        target: target.name,
                        seed,
                        input: input.clone(),
                        ext: target.ext,
                        started: Instant::now(),
                        save_dir: save_dir.to_path_buf(),
                    };
                    Some(save_input(&c, "crash"))
                };
                report.crashes.push(Crash {
                    target: target.name,
                    message,
                    input,
                    saved,
                });
            }
        }
    }
    report
}

/// The committed crash inputs of `target` under `dir/<target>/`, with the
/// seed index their names carry (`...-s<i>.<ext>`).
pub fn saved_inputs(dir: &Path, target: &Target) -> Vec<(PathBuf, usize)> {
    let Ok(rd) = std::fs::read_dir(dir.join(target.name)) else {
        return Vec::new();
    };
    let mut out: Vec<(PathBuf, usize)> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .map(|p| {
            let seed = p
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.rsplit("-s").next())
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            (p, seed)
        })
        .collect();
    out.sort();
    out
}

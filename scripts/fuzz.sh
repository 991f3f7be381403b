#!/usr/bin/env bash
# Fuzzes every parser of untrusted input (tests/fuzz_harness) for 10 minutes in
# all, split evenly across the targets; prints per target the inputs tried and
# the crashes found, and saves one input per panic site under
# tests/fixtures/fuzz/<target>/ (commit them: `cargo test --test fuzz` replays
# them). Hangs and absurd allocations save the input and stop the run.
#   scripts/fuzz.sh [SECONDS] [extra args for examples/fuzz.rs, e.g. --seed 7]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"
shift || true
cargo build --release --example fuzz
exec target/release/examples/fuzz --seconds "$seconds" "$@"

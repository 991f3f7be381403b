#!/usr/bin/env bash
# The Python package's tests (python/tests), as .ci/run runs them after
# `cargo test`: a venv in python/.venv with pinned test tools, `pip install
# ./python` built into the crate's own target/ (CARGO_TARGET_DIR) with the
# settings of the `test` profile `cargo test` used, so the dependencies it
# compiled are reused where their features agree, then pytest. Ends with one line: "python: N passed, N failed, N
# skipped". Exits non-zero when a test failed or none ran.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
venv=python/.venv

t0=$(date +%s)
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
# Pinned: the versions this was last run with (CPython 3.11).
"$venv/bin/pip" install -q --disable-pip-version-check \
    maturin==1.16.0 numpy==2.4.6 pytest==9.2.0 pyarrow==26.0.1 "ray[data]==2.60.0"

# The venv is not activated but last on PATH (for its maturin): bertrt's
# build.rs finds pip's nvcc through the system python3, as `cargo test` did.
# `--profile test` would build the library as a test harness, so: the dev
# profile with the test profile's one difference (opt-level 1 for this
# workspace's own crates; dependencies are opt-level 3 in both), which makes
# the same artifacts `cargo test` made under target/debug.
PATH="$PATH:$root/$venv/bin" CARGO_TARGET_DIR="$root/target" \
    MATURIN_PEP517_ARGS="--profile dev" CARGO_PROFILE_DEV_OPT_LEVEL=1 \
    "$venv/bin/pip" install -q --disable-pip-version-check \
    --no-build-isolation --force-reinstall --no-deps ./python
t1=$(date +%s)
echo "python: package built and installed in $((t1 - t0)) s"

log=$(mktemp)
set +e
"$venv/bin/python" -m pytest python/tests -q -rs -p no:cacheprovider 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
t2=$(date +%s)
echo "python: tests ran in $((t2 - t1)) s"
# pytest's closing line, e.g. "31 passed, 1 skipped, 4 warnings in 90.1s".
last=$(grep -E '([0-9]+ (passed|failed|skipped|errors?)|no tests ran).* in [0-9.]+s' "$log" | tail -1 || true)
count() { echo "$last" | grep -oE "[0-9]+ ($1)\b" | grep -oE '^[0-9]+' || echo 0; }
passed=$(count passed)
failed=$(($(count failed) + $(count 'errors?')))
skipped=$(count skipped)
echo "python: $passed passed, $failed failed, $skipped skipped"
exit "$rc"

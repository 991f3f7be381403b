#!/usr/bin/env bash
# The GPU side of scripts/gpu-check: runs on a GPU machine that has no Rust
# and no network, from the repository root, with the ignored bundle/ folder
# (made by `scripts/gpu-check`) carried along. One call, under 10 minutes:
#
#   1. nvidia-smi (and says loudly when there is no GPU; the GPU steps then skip)
#   2. every test binary of `cargo test --release` (GPU tests included)
#   3. compute-sanitizer memcheck and racecheck over the GPU kernel tests
#   4. scripts/compare_torch.py on the standard grid: bert-base,
#      albert-base-v2, roberta-base, electra-small, spanbert-base (QA);
#      b1/8/32 at s128, b32 at s384, b16 at s512 with avg0.6 lengths
#      (without a GPU: electra-small b1 s128 on the CPU, to exercise the path)
#
# Everything lands under $OUT in at most 8 files (the device tool returns no
# more): summary.json, nvidia-smi.txt, tests.log, sanitizer.log,
# compare.json, compare.log. `scripts/gpu-check --report DIR` turns them into
# docs/hardware/<date>-<gpu>.md.
#
# Environment: OUT (required), GPU_CHECK_BUDGET_S (soft total, default 540),
# GPU_CHECK_SKIP_COMPARE=1, GPU_CHECK_COMPILE_BUDGET_S (torch.compile, default 150).
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder for the results}"
mkdir -p "$OUT"
START=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET_S:-540}
elapsed() { echo $(($(date +%s) - START)); }
left() { echo $((BUDGET - $(elapsed))); }
say() { echo "gpu-check: $*" | tee -a "$OUT/tests.log" >&2; }

BUNDLE_TGZ=bundle/bertrt-gpu-bundle.tar.gz
if [ ! -f "$BUNDLE_TGZ" ]; then
    echo "gpu-check: no $BUNDLE_TGZ (run scripts/gpu-check here first, and carry 'bundle')" >&2
    exit 2
fi
B=$(mktemp -d /tmp/bertrt-bundle.XXXX)
tar xzf "$BUNDLE_TGZ" -C "$B"
COMMIT=$(cat "$B/COMMIT" 2>/dev/null || echo unknown)
export BERTRT_GIT_COMMIT="$COMMIT"

# cuBLAS is not part of the driver: bertrt dlopens libcublas.so(.13). Find one
# (CUDA toolkit, or PyTorch's nvidia wheels) and expose it under the names
# cudarc tries, newest major first.
CUBLAS_DIR="$B/cublas"
mkdir -p "$CUBLAS_DIR"
cublas=$( { ls /usr/local/cuda*/lib64/libcublas.so.* 2>/dev/null;
            python3 - <<'PY' 2>/dev/null
import glob, os, site
for d in site.getsitepackages():
    for p in glob.glob(os.path.join(d, "nvidia", "*", "lib", "libcublas.so.*")) + glob.glob(os.path.join(d, "nvidia", "cu*", "lib", "libcublas.so.*")):
        print(p)
PY
          } | grep -v 'Lt' | sort -V | tail -1)
if [ -n "$cublas" ]; then
    for name in libcublas.so libcublas.so.13; do ln -sfn "$cublas" "$CUBLAS_DIR/$name"; done
    lt=$(ls "$(dirname "$cublas")"/libcublasLt.so.* 2>/dev/null | sort -V | tail -1)
    [ -n "$lt" ] && for name in libcublasLt.so libcublasLt.so.13; do ln -sfn "$lt" "$CUBLAS_DIR/$name"; done
    export LD_LIBRARY_PATH="$CUBLAS_DIR:$(dirname "$cublas")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    say "cuBLAS: $cublas"
else
    say "cuBLAS NOT FOUND (no libcublas.so.* in /usr/local/cuda*/lib64 or site-packages/nvidia): GPU tests will fail to start"
fi

# The test binaries find tests/fixtures through the build machine's
# CARGO_MANIFEST_DIR, compiled in: make that path lead to this checkout.
BUILD_ROOT=$(cat "$B/MANIFEST_DIR")
if [ "$(cd "$BUILD_ROOT" 2>/dev/null && pwd -P)" != "$(pwd -P)" ] && [ ! -e "$BUILD_ROOT" ]; then
    mkdir -p "$(dirname "$BUILD_ROOT")" && ln -s "$(pwd -P)" "$BUILD_ROOT" \
        || say "warning: could not link $BUILD_ROOT to $(pwd -P); fixture paths may fail"
fi

# Tests that run the CLI use the build machine's target/release/bertrt.
if [ ! -x "$BUILD_ROOT/target/release/bertrt" ]; then
    mkdir -p "$BUILD_ROOT/target/release" && cp "$B/bin/bertrt" "$BUILD_ROOT/target/release/bertrt" \
        || say "warning: could not place bertrt at $BUILD_ROOT/target/release; CLI tests may fail"
fi

# 1. The GPU.
GPU=0
if nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 && nvidia-smi -L >>"$OUT/nvidia-smi.txt" 2>&1; then
    GPU=1
    GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader -i 0 | head -1)
    say "GPU: $GPU_NAME"
else
    GPU_NAME=none
    echo "no GPU: nvidia-smi missing or failed" >>"$OUT/nvidia-smi.txt"
    say "NO GPU DETECTED on this machine: GPU tests will skip, sanitizers and the GPU comparison are skipped"
fi

# 2. Every test binary.
TESTS_JSON="["
sep=""
for t in "$B"/tests/*; do
    name=$(basename "$t")
    say "== $name"
    tlimit=$(( $(left) > 240 ? 180 : ($(left) > 60 ? $(left) - 60 : 30) ))
    timeout "$tlimit" "$t" >"$B/$name.log" 2>&1
    rc=$?
    cat "$B/$name.log" >>"$OUT/tests.log"
    passed=$(grep -o '[0-9]* passed' "$B/$name.log" | awk '{s+=$1} END {print s+0}')
    failed=$(grep -o '[0-9]* failed' "$B/$name.log" | awk '{s+=$1} END {print s+0}')
    skipped=$(grep -ci 'skip' "$B/$name.log")
    [ $rc -eq 124 ] && say "$name: TIMED OUT after ${tlimit}s"
    say "$name: rc=$rc passed=$passed failed=$failed skip-lines=$skipped"
    TESTS_JSON+="$sep{\"binary\":\"$name\",\"rc\":$rc,\"passed\":$passed,\"failed\":$failed,\"skip_lines\":$skipped}"
    sep=","
done
TESTS_JSON+="]"

# 3. compute-sanitizer over the GPU tests (test binaries named gpu* or cuda*).
SAN_JSON="["
sep=""
: >"$OUT/sanitizer.log"
if [ $GPU = 1 ] && command -v compute-sanitizer >/dev/null; then
    for t in "$B"/tests/gpu* "$B"/tests/cuda*; do
        [ -e "$t" ] || continue
        for tool in memcheck racecheck; do
            if [ "$(left)" -lt 200 ]; then
                say "sanitizer $tool $(basename "$t"): skipped, time budget"
                continue
            fi
            say "== compute-sanitizer --tool $tool $(basename "$t")"
            timeout 150 compute-sanitizer --tool "$tool" --error-exitcode 99 "$t" --test-threads=1 >>"$OUT/sanitizer.log" 2>&1
            rc=$?
            say "sanitizer $tool $(basename "$t"): rc=$rc"
            SAN_JSON+="$sep{\"tool\":\"$tool\",\"binary\":\"$(basename "$t")\",\"rc\":$rc}"
            sep=","
        done
    done
else
    echo "skipped: no GPU or no compute-sanitizer" >>"$OUT/sanitizer.log"
    say "compute-sanitizer: skipped (no GPU or not installed)"
fi
SAN_JSON+="]"

# 4. bertrt vs PyTorch.
CMP_RC=null
if [ "${GPU_CHECK_SKIP_COMPARE:-0}" = 1 ]; then
    say "compare_torch: skipped (GPU_CHECK_SKIP_COMPARE=1)"
elif ! python3 -c "import torch, transformers" 2>/dev/null; then
    say "compare_torch: skipped (python3 has no torch/transformers)"
else
    if [ $GPU = 1 ]; then
        args=(--device cuda --presets bert-base,albert-base-v2,roberta-base,electra-small,spanbert-base
              --cells 1x128,8x128,32x128,32x384,16x512:avg0.6 --warmup 5 --iters 30 --max-time 3
              --compile-budget "${GPU_CHECK_COMPILE_BUDGET_S:-150}")
    else
        args=(--device cpu --presets electra-small --cells 1x128 --warmup 1 --iters 3)
    fi
    say "== compare_torch.py ${args[*]} (time left $(left)s)"
    PYTHONUNBUFFERED=1 timeout $(( $(left) > 60 ? $(left) : 60 )) \
        python3 scripts/compare_torch.py "${args[@]}" --bertrt "$B/bin/bertrt" --out "$OUT/compare.json" \
        >"$OUT/compare.log" 2>&1
    CMP_RC=$?
    say "compare_torch: rc=$CMP_RC"
fi

cat >"$OUT/summary.json" <<EOF
{"commit": "$COMMIT", "gpu": $( [ $GPU = 1 ] && echo true || echo false ), "gpu_name": "$GPU_NAME",
 "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)", "elapsed_s": $(elapsed),
 "tests": $TESTS_JSON, "sanitizer": $SAN_JSON, "compare_rc": $CMP_RC}
EOF
say "done in $(elapsed)s; results in $OUT"

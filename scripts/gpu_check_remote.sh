#!/usr/bin/env bash
# The GPU side of scripts/gpu-check: runs on a GPU machine that has no Rust
# and no network, from the repository root, with the ignored bundle/ folder
# (made by `scripts/gpu-check`) carried along. One call; the whole run fits
# in 6 minutes (docs/hardware/README.md has the budget). Steps, in order of
# value, each timed, each bounded by what is left of the budget:
#
#   0. nvidia-smi; says loudly when there is no GPU
#   1. the GPU test binaries only (tests/gpu.rs), ignored tests included
#      (--include-ignored, BERTRT_REQUIRE_GPU=1): without a usable GPU they fail
#   2. compute-sanitizer memcheck, then racecheck, on the small-shape kernel
#      test (every kernel and the GEMM), with BERTRT_SYNC_CHECK=1
#   3. scripts/compare_torch.py: output checks of every preset, then the
#      headline cells (bert-base first), then the other presets, then
#      torch.compile while time is left (without a GPU: electra-small b1 s128
#      on the CPU, to exercise the path)
#   4. the other test binaries in the bundle (CLI, server, pipelines and
#      goldens; gpu-check leaves the emulated and tokenizer suites out)
#      while time is left
#
# Everything lands under $OUT in at most 8 files (the device tool returns no
# more), each rewritten as the run goes, so a run cut short keeps what it did:
# summary.json (steps and their seconds, per-binary results, sanitizer
# results), nvidia-smi.txt, tests.log, sanitizer.log, compare.json,
# compare.log, figures.tsv (the tests' error figures). `scripts/gpu-check
# --report DIR` turns them into docs/hardware/<date>-<gpu>.md.
#
# Environment: OUT (required); GPU_CHECK_BUDGET_S (seconds for steps 0-4,
# default 330: 6 minutes less setup and margin); GPU_CHECK_COMPILE_BUDGET_S
# (torch.compile, default 90); GPU_CHECK_SKIP_COMPARE=1; GPU_CHECK_PYTHON
# (default python3: the one with torch); GPU_CHECK_COMPARE_ARGS (replace the
# comparison's grid, for a dry run).
#
# cuBLAS: bertrt dlopens libcublas; the script finds one and puts it on
# LD_LIBRARY_PATH for bertrt's processes only. PyTorch's process never sees
# it (it brings its own cuBLAS, which another one on its path could shadow).
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder for the results}"
mkdir -p "$OUT"
START=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET_S:-330}
PY=${GPU_CHECK_PYTHON:-python3}
elapsed() { echo $(($(date +%s) - START)); }
left() { echo $((BUDGET - $(elapsed))); }
min() { if [ "$1" -lt "$2" ]; then echo "$1"; else echo "$2"; fi; }
say() { echo "gpu-check: $*" | tee -a "$OUT/tests.log" >&2; }
: >"$OUT/tests.log"
: >"$OUT/sanitizer.log"
: >"$OUT/figures.tsv"

BUNDLE_TGZ=bundle/bertrt-gpu-bundle.tar.gz
if [ ! -f "$BUNDLE_TGZ" ]; then
    echo "gpu-check: no $BUNDLE_TGZ (run scripts/gpu-check here first, and carry 'bundle')" >&2
    exit 2
fi
B=$(mktemp -d /tmp/bertrt-bundle.XXXX)
tar xzf "$BUNDLE_TGZ" -C "$B"
COMMIT=$(cat "$B/COMMIT" 2>/dev/null || echo unknown)
export BERTRT_GIT_COMMIT="$COMMIT"
# Tests that need files the GPU machine lacks (the MiniLM package) say
# SKIPPED there, in one line, instead of failing; nowhere else.
export BERTRT_GPU_CHECK=1
# Error figures from the tests (tests/common/record.rs) go to $OUT/figures.tsv.
export BERTRT_RECORD_DIR="$OUT"
# The GPU tests fail (never pass, never skip) without a usable GPU; this says
# that the run wanted one.
export BERTRT_REQUIRE_GPU=1
S="$B/state"
mkdir -p "$S"
: >"$S/steps.tsv"
: >"$S/tests.tsv"
: >"$S/sanitizer.tsv"

# summary.json from the state files; rewritten after every step.
GPU=0
GPU_NAME=none
CUBLAS=""
SANITIZER=""
write_summary() {
    local complete=${1:-false}
    python3 - "$S" "$OUT/summary.json" "$COMMIT" "$GPU" "$GPU_NAME" "$(elapsed)" "$BUDGET" "$complete" "$CUBLAS" "$SANITIZER" <<'PY'
import json, os, sys, time
S, out, commit, gpu, gpu_name, elapsed, budget, complete, cublas, sanitizer = sys.argv[1:]
def rows(name, keys, ints=()):
    r = []
    for line in open(os.path.join(S, name)):
        f = line.rstrip("\n").split("\t")
        d = dict(zip(keys, f))
        for k in ints:
            d[k] = int(d[k]) if d.get(k, "").lstrip("-").isdigit() else None
        r.append(d)
    return r
s = {
    "commit": commit, "gpu": gpu == "1", "gpu_name": gpu_name,
    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "elapsed_s": int(elapsed), "budget_s": int(budget), "complete": complete == "true",
    "cublas": cublas or None, "compute_sanitizer": sanitizer or None,
    "steps": rows("steps.tsv", ["step", "status", "seconds", "note"], ["seconds"]),
    "tests": rows("tests.tsv", ["binary", "step", "rc", "status", "passed", "failed", "ignored", "skip_lines", "seconds"],
                  ["rc", "passed", "failed", "ignored", "skip_lines", "seconds"]),
    "sanitizer": rows("sanitizer.tsv", ["tool", "binary", "test", "rc", "status", "errors", "flagged_kernels", "seconds"],
                      ["rc", "seconds"]),
}
tmp = out + ".tmp"
json.dump(s, open(tmp, "w"), indent=1)
os.replace(tmp, out)
PY
}
T_STEP=0
step_begin() { T_STEP=$(date +%s); say "== step $1 (time left $(left)s of ${BUDGET}s)"; }
step_end() { # name status note
    local secs=$(($(date +%s) - T_STEP))
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$secs" "${3:-}" >>"$S/steps.tsv"
    say "step $1: $2 in ${secs}s${3:+ ($3)}"
    write_summary
}

# Runs one test binary; appends its row to tests.tsv. Args: step timeout binary [test args...]
run_test_binary() {
    local step=$1 tlimit=$2 t=$3
    shift 3
    [ "$tlimit" -ge 10 ] || tlimit=10
    local name t0 rc status passed failed ignored skips
    name=$(basename "$t")
    t0=$(date +%s)
    say "-- $name $* (limit ${tlimit}s)"
    env LD_LIBRARY_PATH="$OUR_LD" timeout "$tlimit" "$t" "$@" >"$B/$name.log" 2>&1
    rc=$?
    cat "$B/$name.log" >>"$OUT/tests.log"
    read -r passed failed ignored < <(awk '/^test result:/ { p += $4; f += $6; i += $8 } END { print p+0, f+0, i+0 }' "$B/$name.log")
    skips=$(grep -c 'SKIPPED' "$B/$name.log")
    case $rc in
        0) status=passed ;;
        124) status="TIMEOUT after ${tlimit}s" ;;
        *) status="FAILED (rc $rc)" ;;
    esac
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$step" "$rc" "$status" "$passed" "$failed" "$ignored" "$skips" \
        "$(($(date +%s) - t0))" >>"$S/tests.tsv"
    say "$name: $status; $passed passed, $failed failed, $ignored ignored, $skips skip lines"
    write_summary
}

# cuBLAS is not part of the driver: bertrt dlopens libcublas.so(.13). Find one
# (CUDA toolkit, or PyTorch's nvidia wheels) and expose it under the names
# cudarc tries, for bertrt's processes only (OUR_LD).
CUBLAS_DIR="$B/cublas"
mkdir -p "$CUBLAS_DIR"
CUBLAS=$( { ls /usr/local/cuda*/lib64/libcublas.so.* /usr/local/cuda*/targets/*/lib/libcublas.so.* 2>/dev/null;
            "$PY" - <<'PY' 2>/dev/null
import glob, os, site
for d in site.getsitepackages():
    for p in glob.glob(os.path.join(d, "nvidia", "*", "lib", "libcublas.so.*")):
        print(p)
PY
          } | grep -v 'Lt' | sort -V | tail -1)
OUR_LD=${LD_LIBRARY_PATH:-}
if [ -n "$CUBLAS" ]; then
    for name in libcublas.so libcublas.so.13; do ln -sfn "$CUBLAS" "$CUBLAS_DIR/$name"; done
    lt=$(ls "$(dirname "$CUBLAS")"/libcublasLt.so.* 2>/dev/null | sort -V | tail -1)
    [ -n "$lt" ] && for name in libcublasLt.so libcublasLt.so.13; do ln -sfn "$lt" "$CUBLAS_DIR/$name"; done
    OUR_LD="$CUBLAS_DIR:$(dirname "$CUBLAS")${OUR_LD:+:$OUR_LD}"
    say "cuBLAS for bertrt: $CUBLAS"
else
    say "cuBLAS NOT FOUND (no libcublas.so.* in /usr/local/cuda*/lib64 or site-packages/nvidia/*/lib): the GPU tests will fail"
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

# compute-sanitizer: on PATH, in a CUDA toolkit, or in a pip package.
SANITIZER=$( { command -v compute-sanitizer;
               ls -d /usr/local/cuda*/bin/compute-sanitizer /usr/local/cuda*/compute-sanitizer/compute-sanitizer \
                   /opt/nvidia/*/compute-sanitizer/compute-sanitizer 2>/dev/null | sort -V;
               "$PY" - <<'PY' 2>/dev/null
import glob, os, site
for d in site.getsitepackages():
    for p in glob.glob(os.path.join(d, "nvidia", "*", "bin", "compute-sanitizer")) + glob.glob(
            os.path.join(d, "nvidia", "*", "compute-sanitizer", "compute-sanitizer")):
        print(p)
PY
             } | while read -r p; do [ -x "$p" ] && echo "$p"; done | head -1)

# 0. The GPU.
step_begin gpu-detect
if nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 && nvidia-smi -L >>"$OUT/nvidia-smi.txt" 2>&1; then
    GPU=1
    GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader -i 0 | head -1)
    say "GPU: $GPU_NAME; compute-sanitizer: ${SANITIZER:-NOT FOUND}"
    step_end gpu-detect ok "$GPU_NAME"
else
    echo "NO GPU: nvidia-smi missing or failed" >>"$OUT/nvidia-smi.txt"
    say "##################################################################"
    say "NO GPU ON THIS MACHINE (nvidia-smi missing or failed)."
    say "The GPU tests run and FAIL (they need a GPU); the sanitizers and the"
    say "GPU comparison are skipped. Nothing here is a GPU result."
    say "##################################################################"
    step_end gpu-detect "NO GPU" "nvidia-smi missing or failed"
fi

# 1. The GPU test binaries, ignored (GPU) tests included.
step_begin gpu-tests
n=0
for t in "$B"/tests/gpu* "$B"/tests/cuda*; do
    [ -e "$t" ] || continue
    n=$((n + 1))
    run_test_binary gpu-tests "$(min 120 "$(left)")" "$t" --include-ignored
done
if [ $n = 0 ]; then step_end gpu-tests "FAILED" "no GPU test binary in the bundle"
elif awk -F'\t' '$2 == "gpu-tests" && $3 != 0 { bad = 1 } END { exit !bad }' "$S/tests.tsv"; then
    step_end gpu-tests FAILED "$([ $GPU = 1 ] && echo "see tests.log" || echo "no GPU")"
else step_end gpu-tests passed; fi

# 2. compute-sanitizer on the small-shape kernel test, our launches checked
# one by one (BERTRT_SYNC_CHECK=1 synchronises after each and names it).
step_begin sanitizers
RESERVE_COMPARE=150
OUR_KERNELS="embeddings_layernorm_f16 add_bias_residual_layernorm_f16 bias_act_f16 attention_f16 gather_rows_f16 cast_f32_f16"
if [ $GPU = 1 ] && [ -n "$SANITIZER" ] && [ -e "$B/tests/gpu" ]; then
    for tool in memcheck racecheck; do
        tlimit=$(min 90 $(( $(left) - RESERVE_COMPARE )))
        if [ "$tlimit" -lt 20 ]; then
            printf '%s\tgpu\tkernels_match_cpu_references_on_gpu\t\tskipped: time budget\t\t\t0\n' "$tool" >>"$S/sanitizer.tsv"
            say "sanitizer $tool: skipped, time budget"
            continue
        fi
        say "-- compute-sanitizer --tool $tool (limit ${tlimit}s)"
        t0=$(date +%s)
        env -u BERTRT_RECORD_DIR BERTRT_SYNC_CHECK=1 LD_LIBRARY_PATH="$OUR_LD" timeout "$tlimit" \
            "$SANITIZER" --tool "$tool" --error-exitcode 99 --print-limit 50 \
            "$B/tests/gpu" --include-ignored --exact kernels_match_cpu_references_on_gpu --test-threads=1 \
            >"$B/san-$tool.log" 2>&1
        rc=$?
        { echo "=== compute-sanitizer --tool $tool: rc $rc"; cat "$B/san-$tool.log"; } >>"$OUT/sanitizer.log"
        errors=$(grep -o 'ERROR SUMMARY: [0-9]* error' "$B/san-$tool.log" | tail -1 | grep -o '[0-9]*')
        flagged=""
        for k in $OUR_KERNELS; do
            # Only the sanitizer's own lines start with "=========".
            grep '^=========' "$B/san-$tool.log" | grep -q "$k" && flagged+="$k "
        done
        case $rc in
            0) status=clean ;;
            124) status="TIMEOUT after ${tlimit}s (no verdict)" ;;
            99) status="ERRORS reported" ;;
            *) status="test failed under the sanitizer (rc $rc)" ;;
        esac
        printf '%s\tgpu\tkernels_match_cpu_references_on_gpu\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$rc" "$status" \
            "${errors:-?}" "${flagged:-none}" "$(($(date +%s) - t0))" >>"$S/sanitizer.tsv"
        say "sanitizer $tool: $status; errors ${errors:-?}; our kernels flagged: ${flagged:-none}"
        write_summary
    done
    step_end sanitizers done "$SANITIZER"
else
    why=$([ $GPU = 1 ] && { [ -n "$SANITIZER" ] && echo "no gpu test binary" || echo "compute-sanitizer not found"; } || echo "no GPU")
    echo "skipped: $why" >>"$OUT/sanitizer.log"
    step_end sanitizers skipped "$why"
fi

# 3. bertrt vs PyTorch: checks first, then the headline cells, then the rest.
step_begin compare
if [ "${GPU_CHECK_SKIP_COMPARE:-0}" = 1 ]; then
    step_end compare skipped "GPU_CHECK_SKIP_COMPARE=1"
elif ! "$PY" -c "import torch, transformers" 2>/dev/null; then
    step_end compare skipped "$PY has no torch/transformers"
else
    if [ -n "${GPU_CHECK_COMPARE_ARGS:-}" ]; then
        read -r -a args <<<"$GPU_CHECK_COMPARE_ARGS"
    elif [ $GPU = 1 ]; then
        args=(--device cuda --presets bert-base,roberta-base,albert-base-v2,electra-small,spanbert-base
              --cells 1x128,8x128,32x128,32x384,16x512:avg0.6 --warmup 5 --iters 30 --max-time 2
              --compile-budget "${GPU_CHECK_COMPILE_BUDGET_S:-90}")
    else
        args=(--device cpu --presets electra-small --cells 1x128 --warmup 1 --iters 3 --threads 2 --no-compile)
    fi
    # Leave ~20 s for the record; the rest of the budget is the comparison's.
    cbudget=$(( $(left) - 20 > 30 ? $(left) - 20 : 30 ))
    say "-- compare_torch.py ${args[*]} --budget-s $cbudget"
    env -u BERTRT_RECORD_DIR PYTHONUNBUFFERED=1 BERTRT_LD_LIBRARY_PATH="$OUR_LD" timeout $((cbudget + 30)) \
        "$PY" scripts/compare_torch.py "${args[@]}" --budget-s "$cbudget" \
        --bertrt "$B/bin/bertrt" --out "$OUT/compare.json" >"$OUT/compare.log" 2>&1
    rc=$?
    case $rc in
        0) step_end compare "checks passed" ;;
        124) step_end compare "TIMEOUT after $((cbudget + 30))s" "compare.json holds what finished" ;;
        *) step_end compare "FAILED (rc $rc)" "see compare.log" ;;
    esac
fi

# 4. Everything else while time is left: the CPU and emulated test binaries.
step_begin other-tests
ran=0; skipped=0
for t in "$B"/tests/*; do
    name=$(basename "$t")
    case $name in gpu*|cuda*) continue ;; esac
    if [ "$(left)" -lt 15 ]; then
        printf '%s\tother-tests\t\tskipped: time budget\t\t\t\t\t0\n' "$name" >>"$S/tests.tsv"
        skipped=$((skipped + 1))
        continue
    fi
    run_test_binary other-tests "$(left)" "$t"
    ran=$((ran + 1))
done
step_end other-tests done "$ran binaries run, $skipped skipped for time"

write_summary true
say "done in $(elapsed)s (budget ${BUDGET}s); results in $OUT"

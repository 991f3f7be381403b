#!/usr/bin/env bash
# A/B of two bertrt binaries on one `bertrt bench` cell, for shared CPUs whose
# wall clock moves 5-30% from run to run: RUNS rounds (default 10), each a
# hyperfine run of both, the order alternating (A B, B A, ...), after one
# untimed run of each. Per round the ratio B/A of the process wall times;
# prints the median and the minimum of those ratios (< 1: B is faster) and
# the ratio of the two medians. Each timed process loads the model and runs
# the cell --iters times (default 5), so the cell dominates start-up.
#
#   scripts/ab_cpu.sh A_BIN B_BIN [extra `bertrt bench` args]
#   RUNS=10 CELL=8x128 LENGTHS=fixed THREADS=2 ITERS=5 MODEL=bert-base scripts/ab_cpu.sh \
#       target-a/release/bertrt target/release/bertrt --dtype bf16
#
# Threads: --threads N where the binary has it, RAYON_NUM_THREADS always.
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
A=$1 B=$2
shift 2
for bin in "$A" "$B"; do
  [ -x "$bin" ] || { echo "ab_cpu: $bin is not an executable bertrt" >&2; exit 2; }
done
command -v hyperfine >/dev/null || { echo "ab_cpu: no hyperfine (apt-get install hyperfine, or scripts/setup-bench-cpu.sh)" >&2; exit 2; }
RUNS=${RUNS:-10} CELL=${CELL:-8x128} LENGTHS=${LENGTHS:-fixed} THREADS=${THREADS:-2}
ITERS=${ITERS:-5} MODEL=${MODEL:-bert-base}
[ "$RUNS" -ge 10 ] || echo "ab_cpu: warning: RUNS=$RUNS; issue 12 asks for at least 10" >&2
batch=${CELL%x*} seq=${CELL#*x}
export RAYON_NUM_THREADS=$THREADS

cmd_for() {  # the bench command line for one binary, quoted for hyperfine
  local bin=$1 threads=""
  shift
  local help
  help=$("$bin" bench --help)
  if [[ $help == *--threads* ]]; then threads="--threads $THREADS"; fi
  printf '%q ' "$bin" bench --model "$MODEL" --device cpu --batch "$batch" --seq "$seq" \
    --lengths "$LENGTHS" --warmup 1 --iters "$ITERS" --format json "$@"
  printf '%s' "$threads"
}
cmd_a=$(cmd_for "$A" "$@") cmd_b=$(cmd_for "$B" "$@")
echo "A: $cmd_a" >&2
echo "B: $cmd_b" >&2

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
for ((i = 0; i < RUNS; i++)); do
  warm=0
  [ "$i" -eq 0 ] && warm=1
  if ((i % 2 == 0)); then first=$cmd_a second=$cmd_b names=(-n A -n B); else first=$cmd_b second=$cmd_a names=(-n B -n A); fi
  hyperfine -N --style none --runs 1 --warmup "$warm" "${names[@]}" "$first" "$second" \
    --export-json "$dir/round$i.json" >/dev/null
  printf 'round %d/%d done\n' $((i + 1)) "$RUNS" >&2
done

python3 - "$dir" "$RUNS" <<'PY'
import json, statistics, sys
d, runs = sys.argv[1], int(sys.argv[2])
a, b, ratios = [], [], []
for i in range(runs):
    t = {r["command"]: r["mean"] for r in json.load(open(f"{d}/round{i}.json"))["results"]}
    a.append(t["A"]); b.append(t["B"]); ratios.append(t["B"] / t["A"])
print(f"A: median {statistics.median(a):.3f} s, min {min(a):.3f} s over {runs} runs")
print(f"B: median {statistics.median(b):.3f} s, min {min(b):.3f} s over {runs} runs")
print(f"B/A per round: median {statistics.median(ratios):.3f}, minimum {min(ratios):.3f}, "
      f"maximum {max(ratios):.3f} (< 1: B is faster)")
print(f"B/A of the medians {statistics.median(b) / statistics.median(a):.3f}, of the minima {min(b) / min(a):.3f}")
PY

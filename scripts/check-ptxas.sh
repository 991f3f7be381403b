#!/usr/bin/env bash
# check-ptxas.sh: compile every kernels/*.cu for each target arch with
# `ptxas -v`, print registers / spills / shared memory per kernel and arch,
# and fail if any kernel spills. Same flags as build.rs (-O3 -lineinfo, no
# fast math). nvcc: $NVCC, else $CUDA_HOME/bin/nvcc, else nvcc on PATH, else a
# pip-installed nvidia-cuda-nvcc.
set -euo pipefail
cd "$(dirname "$0")/.."

nvcc="${NVCC:-}"
if [[ -z "$nvcc" && -n "${CUDA_HOME:-}" && -x "$CUDA_HOME/bin/nvcc" ]]; then nvcc="$CUDA_HOME/bin/nvcc"; fi
if [[ -z "$nvcc" ]]; then nvcc="$(command -v nvcc || true)"; fi
if [[ -z "$nvcc" ]]; then
  nvcc="$(python3 -c 'import site,os; print(next((p for d in site.getsitepackages() for p in [os.path.join(d,"nvidia/cu13/bin/nvcc")] if os.path.exists(p)), ""))')"
fi
[[ -x "$nvcc" ]] || { echo "check-ptxas: nvcc not found" >&2; exit 2; }

tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
for f in kernels/*.cu; do echo "#include \"$PWD/$f\""; done > "$tmp/all.cu"

status=0
printf '%-34s %-6s %5s %7s %7s %6s\n' kernel arch regs spill_st spill_ld smem
for arch in 80 86 89 90; do
  "$nvcc" -cubin -O3 -lineinfo -std=c++17 -arch=sm_$arch -Ikernels -Xptxas -v \
    -o "$tmp/k.cubin" "$tmp/all.cu" 2> "$tmp/log_$arch" || { cat "$tmp/log_$arch"; exit 1; }
  # ptxas prints: Compiling entry function 'name' / spill line / Used N registers ...
  awk -v arch="sm_$arch" '
    /Compiling entry function/ { match($0, /'"'"'[^'"'"']+'"'"'/); fn = substr($0, RSTART+1, RLENGTH-2) }
    /spill stores/ { st = $5; ld = $9 }
    /Used [0-9]+ registers/ {
      match($0, /Used [0-9]+ registers/); regs = substr($0, RSTART+5, RLENGTH-15)
      smem = "0"; if (match($0, /[0-9]+ bytes smem/)) smem = substr($0, RSTART, RLENGTH-11)
      printf "%-34s %-6s %5s %7s %7s %6s\n", fn, arch, regs, st, ld, smem
    }' "$tmp/log_$arch" | tee -a "$tmp/table"
done
echo
if awk '$4 != "0" || $5 != "0" { bad = 1 } END { exit !bad }' "$tmp/table"; then
  echo "check-ptxas: SPILLS found (see table)" >&2
  status=1
fi
exit $status

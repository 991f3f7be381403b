#!/usr/bin/env bash
# check-ptxas.sh: compile every kernels/*.cu for each target arch with
# `ptxas -v`, print registers / spills / shared memory per kernel and arch,
# and fail if any kernel spills. Same flags as build.rs (-O3 -lineinfo, no
# fast math). nvcc: $NVCC, else $CUDA_HOME/bin/nvcc, else nvcc on PATH, else a
# pip-installed nvidia-cuda-nvcc.
#
# Tensor cores: for sm_80 and sm_90 the SASS of every attention_tc kernel
# (cuobjdump -sass, cuobjdump/nvdisasm beside nvcc, from
# scripts/install-nvcc.sh) must hold HMMA instructions; the script fails if
# one does not, or if cuobjdump is missing.
#
# 16-byte memory access: for sm_80 and sm_90 the SASS of every vectorised
# memory-bound kernel (vec_kernels below) must hold 128-bit global loads
# (LDG.E.128) and stores (STG.E.128); a regression to scalar loads fails.
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
  if [[ $arch == 80 || $arch == 90 ]]; then cp "$tmp/k.cubin" "$tmp/k_$arch.cubin"; fi
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

# HMMA in the tensor-core kernels' SASS.
cuobjdump="$(dirname "$nvcc")/cuobjdump"
[[ -x "$cuobjdump" ]] || cuobjdump="$(command -v cuobjdump || true)"
if [[ -z "$cuobjdump" ]]; then
  echo "check-ptxas: cuobjdump not found (pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm; see scripts/install-nvcc.sh)" >&2
  exit 1
fi
vec_kernels="bias_act_f16 add_bias_residual_layernorm_f16 embeddings_layernorm_f16 gather_rows_f16 cast_f32_f16"
tc_kernels=$(awk '$1 ~ /^attention_tc_/ { print $1 }' "$tmp/table" | sort -u)
[[ -n "$tc_kernels" ]] || { echo "check-ptxas: no attention_tc kernel compiled" >&2; exit 1; }
for arch in 80 90; do
  PATH="$(dirname "$cuobjdump"):$PATH" "$cuobjdump" -sass "$tmp/k_$arch.cubin" > "$tmp/sass_$arch" \
    || { echo "check-ptxas: cuobjdump -sass failed for sm_$arch" >&2; exit 1; }
  for fn in $tc_kernels; do
    # The function's SASS runs from its "Function : name" header to the next one.
    n=$(awk -v fn="$fn" '/Function : / { on = ($3 == fn) } on && /HMMA/ { n++ } END { print n + 0 }' "$tmp/sass_$arch")
    printf 'sass %-30s sm_%s  %4d HMMA\n' "$fn" "$arch" "$n"
    if [[ $n -eq 0 ]]; then
      echo "check-ptxas: $fn has no HMMA in its sm_$arch SASS (not on tensor cores)" >&2
      status=1
    fi
  done
  for fn in $vec_kernels; do
    read -r ld st < <(awk -v fn="$fn" '/Function : / { on = ($3 == fn) }
      on && /LDG\.E\.128/ { ld++ } on && /STG\.E\.128/ { st++ } END { print ld + 0, st + 0 }' "$tmp/sass_$arch")
    printf 'sass %-30s sm_%s  %4d LDG.E.128 %4d STG.E.128\n' "$fn" "$arch" "$ld" "$st"
    if [[ $ld -eq 0 || $st -eq 0 ]]; then
      echo "check-ptxas: $fn has no 128-bit global loads or stores in its sm_$arch SASS (not vectorised)" >&2
      status=1
    fi
  done
done
exit $status

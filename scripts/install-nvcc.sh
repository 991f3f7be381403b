#!/usr/bin/env bash
# nvcc without a CUDA toolkit, from PyPI. The versions are pinned together:
# left unpinned, nvidia-nvvm resolves to 13.5, whose PTX the 13.0 ptxas rejects.
# CUDA 13.0 keeps the fatbin loadable by the driver 580 series (CUDA 13.0).
set -euo pipefail
PY=${PYTHON:-python3}
# cuobjdump + nvdisasm (scripts/check-ptxas.sh reads the SASS): PyPI has no
# 13.0 release of either; 13.2.51 is the oldest 13.x there and reads the 13.0
# ptxas cubins for sm_80..sm_90.
$PY -m pip install -q \
  nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 \
  nvidia-cuda-runtime==13.0.96 nvidia-nvvm==13.0.88 nvidia-cuda-cccl==13.0.85 \
  nvidia-cuda-cuobjdump==13.2.51 nvidia-cuda-nvdisasm==13.2.51
$PY - <<'PY'
import os, site
for d in site.getsitepackages():
    p = os.path.join(d, "nvidia/cu13/bin/nvcc")
    if os.path.exists(p):
        print("nvcc:", p)
        break
else:
    raise SystemExit("nvcc not found after pip install")
PY

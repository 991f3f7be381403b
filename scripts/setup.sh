#!/usr/bin/env bash
# One-time setup on a fresh machine: nvcc from PyPI (to compile the CUDA
# kernels), all-MiniLM-L6-v2 in the HF cache, and a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-nvcc.sh
bash scripts/setup-minilm.sh
cargo build --release

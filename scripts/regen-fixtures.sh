#!/usr/bin/env bash
# Regenerates tests/fixtures/ from HF transformers: installs the pinned
# reference stack (scripts/requirements-ref.txt: torch, transformers 4.57,
# sentence-transformers, ...; CPU use only) into a virtual environment under
# .venv-ref (git-ignored), then runs scripts/gen_fixtures.py with it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv-ref/bin/python ]; then
  "$PY" -m venv .venv-ref
fi
.venv-ref/bin/python -m pip install -q -r scripts/requirements-ref.txt
.venv-ref/bin/python scripts/gen_fixtures.py "$@"

"""Shared fixtures: the repository's test fixtures (tests/fixtures, the same
models and goldens the Rust tests use), a safetensors reader for the golden
tensors, and MiniLM from the HF cache (scripts/setup-minilm.sh puts it there)."""

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

import bertrt

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"

# Never reach for the network: a model not in the cache is an error here.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def model_dir(name: str) -> str:
    return str(FIXTURES / "models" / name)


def pipelines() -> dict:
    return json.loads((FIXTURES / "golden" / "pipelines.json").read_text())


def golden_meta(name: str) -> dict:
    return json.loads((FIXTURES / "golden" / f"{name}.json").read_text())


def load_golden(name: str) -> dict:
    """tests/fixtures/golden/NAME.safetensors as numpy arrays (F32 and I64)."""
    raw = (FIXTURES / "golden" / f"{name}.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    kinds = {"F32": np.float32, "I64": np.int64}
    out = {}
    for key, t in header.items():
        if key == "__metadata__":
            continue
        a, b = t["data_offsets"]
        out[key] = np.frombuffer(data[a:b], dtype=kinds[t["dtype"]]).reshape(t["shape"])
    return out


_engines: dict = {}


def engine(name: str) -> "bertrt.Engine":
    """One CPU engine per fixture model for the whole session."""
    if name not in _engines:
        _engines[name] = bertrt.Engine(model_dir(name), device="cpu")
    return _engines[name]


@pytest.fixture(scope="session")
def minilm() -> "bertrt.Engine":
    try:
        return bertrt.Engine(MINILM, device="cpu")
    except (FileNotFoundError, ValueError) as e:
        pytest.fail(f"all-MiniLM-L6-v2 not in the HF cache: run scripts/setup-minilm.sh ({e})")


@pytest.fixture(scope="session")
def minilm_golden() -> dict:
    return golden_meta("minilm")

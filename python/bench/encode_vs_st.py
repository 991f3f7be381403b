"""bertrt's SentenceEncoder.encode against sentence-transformers' encode with
the torch backend and with backend="onnx" (ONNX Runtime), on the same 1,000
sentences with all-MiniLM-L6-v2, in one run. Not part of CI.

    pip install ./python "sentence-transformers[onnx]"
    python python/bench/encode_vs_st.py [--model DIR_OR_HUB_ID] [--device cpu|cuda] [--repeat 3]

Prints, per engine, the best and median wall time of ``--repeat`` encodes of
all sentences (after one warm-up encode), sentences per second, and the
worst cosine against the torch backend's vectors (the check that the engines
computed the same thing). Set the thread counts alike for a fair CPU
comparison (``--threads N`` sets torch's, ONNX Runtime's and bertrt's).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from typing import Callable, Dict, List

import numpy as np


def sentences(n: int, seed: int = 0) -> List[str]:
    rng = random.Random(seed)
    words = (
        "the a of river city train weather market quick slow bright cold report people "
        "engine model language data week night morning north south music paper road"
    ).split()
    return [
        " ".join(rng.choice(words) for _ in range(rng.randint(6, 40))).capitalize() + "."
        for _ in range(n)
    ]


def timed(encode: Callable[[], np.ndarray], repeat: int) -> Dict[str, object]:
    out = encode()  # warm-up (and, for ONNX, the first session run)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = encode()
        times.append(time.perf_counter() - t0)
    return {"best": min(times), "median": statistics.median(times), "vectors": np.asarray(out)}


def worst_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(cos.min())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    p.add_argument("--device", default="cpu")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="threads for every engine (default: theirs)")
    a = p.parse_args()

    if a.threads:
        os.environ["OMP_NUM_THREADS"] = str(a.threads)
    import torch
    from sentence_transformers import SentenceTransformer

    import bertrt

    if a.threads:
        torch.set_num_threads(a.threads)
    texts = sentences(a.n)
    kw = dict(batch_size=a.batch_size, convert_to_numpy=True, show_progress_bar=False)

    results = {}
    st_torch = SentenceTransformer(a.model, device=a.device)
    results["sentence-transformers (torch)"] = timed(lambda: st_torch.encode(texts, **kw), a.repeat)
    del st_torch

    onnx_kwargs = {}
    if a.threads:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = a.threads
        onnx_kwargs = {"session_options": so}
    st_onnx = SentenceTransformer(a.model, device=a.device, backend="onnx", model_kwargs=onnx_kwargs)
    results['sentence-transformers (backend="onnx")'] = timed(lambda: st_onnx.encode(texts, **kw), a.repeat)
    del st_onnx

    enc = bertrt.SentenceEncoder(a.model, device=a.device, threads=a.threads)
    results[f"bertrt SentenceEncoder ({enc.engine.backend})"] = timed(lambda: enc.encode(texts, **kw), a.repeat)

    ref = results["sentence-transformers (torch)"]["vectors"]
    print(f"{a.n} sentences, batch {a.batch_size}, device {a.device}, best/median of {a.repeat}")
    print(f"{'engine':<52} {'best s':>8} {'median s':>9} {'sent/s':>8} {'min cos vs torch':>17}")
    for name, r in results.items():
        print(
            f"{name:<52} {r['best']:>8.3f} {r['median']:>9.3f} {a.n / r['best']:>8.0f} "
            f"{worst_cosine(r['vectors'], ref):>17.6f}"
        )


if __name__ == "__main__":
    main()

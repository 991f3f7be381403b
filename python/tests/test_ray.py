"""examples/ray_data_embed.py on a local Ray instance: 2,000 sentences with
ids through two workers, joined on id, equal to one process's Engine.embed
(max abs <= 1e-6), nothing lost or duplicated. Skipped (and reported as
skipped) where ray cannot be imported."""

import importlib.util
import random
import sys
import threading
import time

import numpy as np
import pytest

from conftest import MINILM, ROOT

ray = pytest.importorskip("ray", reason="ray is not installed: the Ray Data example cannot run")
pa = pytest.importorskip("pyarrow", reason="pyarrow is not installed")
import pyarrow.parquet as pq  # noqa: E402


def load_example():
    path = ROOT / "examples" / "ray_data_embed.py"
    spec = importlib.util.spec_from_file_location("ray_data_embed", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["ray_data_embed"] = mod
    spec.loader.exec_module(mod)
    # Run as a script its classes live in __main__ and travel by value; loaded
    # from a file here, the workers could not import it by name.
    ray.cloudpickle.register_pickle_by_value(mod)
    return mod


def corpus(n):
    rng = random.Random(7)
    words = "the a cat dog river train weather city quick slow red blue sat ran over under near far".split()
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 24))) + f" #{i}" for i in range(n)]


def test_ray_data_example_equals_one_process(tmp_path, minilm):
    n = 2000
    ids = np.arange(100_000, 100_000 + n, dtype=np.int64)
    rng = np.random.default_rng(3)
    rng.shuffle(ids)  # ids are not row numbers
    texts = corpus(n)
    # A corpus in 8 files, as a real one comes: blocks for both workers.
    src = tmp_path / "corpus"
    src.mkdir()
    for k in range(8):
        part = slice(k * n // 8, (k + 1) * n // 8)
        pq.write_table(pa.table({"id": ids[part], "text": texts[part]}), src / f"part-{k}.parquet")
    out = tmp_path / "embeddings"
    example = load_example()

    t0 = time.monotonic()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    failed = []

    def run():
        try:
            ray.data.DataContext.get_current().enable_progress_bars = False
            # Two workers of half a CPU each: the other CPU reads and writes.
            example.embed_corpus(str(src), str(out), MINILM, workers=2, cpus_per_worker=0.5, batch_size=128)
        except BaseException as e:  # noqa: BLE001 - re-raised below
            failed.append(e)

    try:
        job = threading.Thread(target=run, daemon=True)
        job.start()
        job.join(timeout=180 - (time.monotonic() - t0))
        took = time.monotonic() - t0
        assert not job.is_alive(), f"the Ray run did not finish in 3 minutes ({took:.0f} s)"
    finally:
        ray.shutdown()
    if failed:
        raise failed[0]

    got = pq.read_table(out)
    got_ids = got.column("id").to_numpy()
    assert len(got_ids) == n, f"{len(got_ids)} rows written for {n} inputs"
    assert len(np.unique(got_ids)) == n, "duplicated ids"
    assert set(got_ids.tolist()) == set(ids.tolist()), "lost or foreign ids"
    emb = got.column("embedding")
    assert pa.types.is_fixed_size_list(emb.type) and emb.type.list_size == 384
    vectors = np.asarray(emb.combine_chunks().flatten(), dtype=np.float32).reshape(n, 384)

    want = minilm.embed(texts)
    row_of = {int(i): r for r, i in enumerate(ids)}
    order = np.array([row_of[int(i)] for i in got_ids])
    diff = np.abs(vectors - want[order]).max()
    assert diff <= 1e-6, f"max abs difference {diff:g}"

"""One Engine shared by 8 Python threads gives what sequential calls give,
and the GIL is released while it works."""

import threading
import time

import numpy as np

from conftest import engine


def work(eng, i):
    texts = [f"the cat number {i} sat on mat {j}." for j in range(1 + i % 5)]
    return (
        eng.embed(texts),
        eng.fill_mask(f"the [MASK] number {i} sat.", top_k=3),
        eng.tokenize(f"sentence {i}", "pair"),
    )


def test_eight_threads_share_one_engine():
    eng = engine("bert_mlm")
    jobs = list(range(32))
    sequential = [work(eng, i) for i in jobs]
    results = [None] * len(jobs)
    errors = []

    def worker(k):
        try:
            for i in jobs[k::8]:
                results[i] = work(eng, i)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i, (want, got) in enumerate(zip(sequential, results)):
        assert got is not None, f"job {i} lost"
        np.testing.assert_array_equal(got[0], want[0], err_msg=f"job {i} embed")
        assert got[1] == want[1], f"job {i} fill_mask"
        assert got[2] == want[2], f"job {i} tokenize"


def test_gil_released_during_embed(minilm):
    """A Python thread ticks every millisecond; while a >= 0.5 s embed runs it
    must keep ticking (held GIL: no tick between the call's start and end)."""
    texts = [f"sentence {i} about the weather, trains, and a long walk by the river." for i in range(64)]
    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    t = threading.Thread(target=ticker)
    t.start()
    try:
        for _ in range(6):  # grow the input until one call lasts >= 0.5 s
            t0 = time.perf_counter()
            minilm.embed(texts)
            t1 = time.perf_counter()
            if t1 - t0 >= 0.5:
                break
            texts = texts * 2
    finally:
        stop.set()
        t.join()
    assert t1 - t0 >= 0.5, f"embed took only {t1 - t0:.2f} s"
    inside = [x for x in ticks if t0 + 0.1 < x < t1 - 0.1]
    # ~1 tick per ms when the GIL is free; on a loaded machine far fewer, but
    # never zero.
    assert len(inside) >= 20, f"{len(inside)} ticks during a {t1 - t0:.2f} s embed"


def test_threads_and_dtype_options():
    """threads= sizes the engine's own pool (the CLI's --threads); results do
    not depend on it. dtype="f32" on the CPU is the default made explicit."""
    import bertrt
    from conftest import model_dir

    one = bertrt.Engine(model_dir("bert_mlm"), device="cpu", threads=1, dtype="f32")
    assert one.threads == 1 and one.dtype == "f32"
    assert "1 threads" in one.backend, one.backend
    texts = [f"the cat number {i} sat on the mat." for i in range(12)]
    np.testing.assert_allclose(one.embed(texts), engine("bert_mlm").embed(texts), atol=1e-6)
    assert one.fill_mask("the [MASK] sat.") == engine("bert_mlm").fill_mask("the [MASK] sat.")

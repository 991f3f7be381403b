"""The Python methods give the CLI's values: `bertrt ... --format json` (the
binary `cargo test` builds, target/debug/bertrt, or $BERTRT_CLI) against the
same call here. Floats equal as float32 (the CLI prints f32's shortest
digits); everything else exact. Skipped, with the reason, where no binary
has been built."""

import json
import os
import subprocess

import numpy as np
import pytest

from conftest import ROOT, engine, model_dir


def cli_path():
    env = os.environ.get("BERTRT_CLI")
    if env:
        return env
    for profile in ("debug", "release"):
        p = ROOT / "target" / profile / "bertrt"
        if p.is_file():
            return str(p)
    return None


CLI = cli_path()
pytestmark = pytest.mark.skipif(CLI is None, reason="no bertrt binary: run `cargo build` (or set BERTRT_CLI)")


def cli(*args):
    out = subprocess.run(
        [CLI, *args, "--device", "cpu", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def same(got, want, where="result"):
    """Equal, floats compared as float32; tuples read as JSON arrays."""
    if isinstance(want, float) or isinstance(got, float):
        assert np.float32(got) == np.float32(want), f"{where}: {got!r} != {want!r}"
    elif isinstance(want, list):
        assert isinstance(got, (list, tuple)) and len(got) == len(want), f"{where}: {got!r} != {want!r}"
        for i, (g, w) in enumerate(zip(got, want)):
            same(g, w, f"{where}[{i}]")
    elif isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), f"{where}: keys {got!r} != {want!r}"
        for k in want:
            same(got[k], want[k], f"{where}.{k}")
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def test_embed_equals_cli():
    texts = ["Hello", "The cat sat on the mat and looked."]
    for pooling in ["cls", "mean", "pooler"]:
        want = cli("embed", "-m", model_dir("bert_model_f16"), "--pooling", pooling, *texts)
        got = engine("bert_model_f16").embed(texts, pooling=pooling)
        same(got.tolist(), want, f"embed {pooling}")


def test_fill_mask_equals_cli():
    text = "The cat [MASK] on the [MASK]."
    want = cli("fill-mask", "-m", model_dir("bert_mlm"), "--top-k", "3", text)
    # The CLI prints one list per mask; the method unwraps a single mask, as HF.
    same(engine("bert_mlm").fill_mask(text, top_k=3), want)
    one = "The cat [MASK] on the mat."
    same([engine("bert_mlm").fill_mask(one, top_k=2)], cli("fill-mask", "-m", model_dir("bert_mlm"), "--top-k", "2", one))


def test_question_answering_equals_cli():
    q, c = "Who wrote Moby Dick?", "Moby Dick was written by Herman Melville in 1851. It is a long book."
    for top_k in ["1", "3"]:
        want = cli("qa", "-m", model_dir("roberta_qa"), "--question", q, "--context", c, "--top-k", top_k)
        same([engine("roberta_qa").question_answering(q, c, top_k=int(top_k))], want, f"qa top_k={top_k}")


def test_classify_detect_tokenize_equal_cli():
    text = "John Smith lives in New York with his family."
    same([engine("bert_cls").classify(text, text_pair="He likes it.")],
         cli("classify", "-m", model_dir("bert_cls"), text, "--pair", "He likes it."))
    same([engine("bert_tokcls").token_classification(text)],
         cli("classify", "-m", model_dir("bert_tokcls"), "--tokens", text))
    same([engine("bert_tokcls").token_classification(text, aggregation_strategy="simple")],
         cli("classify", "-m", model_dir("bert_tokcls"), "--tokens", "--aggregation", "simple", text))
    same([engine("electra_disc").detect(text)], cli("detect", "-m", model_dir("electra_disc"), text))
    same([engine("roberta_mlm").tokenize(text, "a pair")],
         cli("tokenize", "-m", model_dir("roberta_mlm"), text, "--pair", "a pair"))

"""Every Engine method against the goldens the Rust tests use
(tests/fixtures/golden): HF pipelines' outputs, HF tensors, HF tokenizers.
Scores within 1e-5 (as tests/pipelines.rs), everything else exact."""

import json

import numpy as np
import pytest

from conftest import FIXTURES, engine, golden_meta, load_golden, pipelines

ATOL = 1e-5


def close(a, b):
    return abs(a - b) <= ATOL


@pytest.mark.parametrize("model", ["bert_mlm", "roberta_mlm", "albert_mlm", "electra_gen"])
def test_fill_mask_matches_pipeline(model):
    eng = engine(model)
    cases = [c for c in pipelines()["fill_mask"] if c["model"] == model]
    assert cases, f"no fill-mask goldens for {model}"
    for c in cases:
        got = eng.fill_mask(c["text"], top_k=c["args"]["top_k"])
        want = c["output"]
        # HF: a flat list for one mask, a list per mask otherwise; so here.
        assert isinstance(got[0], list) == isinstance(want[0], list), (c["text"], got)
        rows = zip(got, want) if isinstance(want[0], list) else [(got, want)]
        for g_row, w_row in rows:
            assert len(g_row) == len(w_row)
            for g, w in zip(g_row, w_row):
                assert set(g) == set(w), (g, w)
                assert g["token"] == w["token"] and g["token_str"] == w["token_str"], (g, w)
                assert g["sequence"] == w["sequence"], (g, w)
                assert close(g["score"], w["score"]), (g, w)


def test_fill_mask_list_gives_one_result_per_text():
    eng = engine("bert_mlm")
    texts = ["the cat [MASK] on the mat.", "a [MASK] dog."]
    assert eng.fill_mask(texts, top_k=3) == [eng.fill_mask(t, top_k=3) for t in texts]


def test_text_classification_matches_pipeline():
    n = 0
    for c in pipelines()["text_classification"]:
        eng = engine(c["model"])
        inp = c["input"]
        if isinstance(inp, str):
            got = eng.classify(inp)
        else:
            got = eng.classify(inp["text"], text_pair=inp.get("text_pair"))
        want = c["output"]
        assert [g["label"] for g in got] == [w["label"] for w in want], c
        assert all(close(g["score"], w["score"]) for g, w in zip(got, want)), (got, want)
        assert all(set(g) == {"label", "score"} for g in got)
        n += 1
    assert n >= 8


def test_classify_top_k_keeps_the_best():
    eng = engine("bert_cls")
    full = eng.classify("This movie is terrible, I hated every minute.")
    assert eng.classify("This movie is terrible, I hated every minute.", top_k=1) == full[:1]


def test_token_classification_matches_pipeline():
    eng = engine("bert_tokcls")
    counts = {"none": 0, "simple": 0}
    for c in pipelines()["token_classification"]:
        strategy = c["args"]["aggregation_strategy"]
        got = eng.token_classification(
            c["text"], aggregation_strategy=strategy, ignore_labels=c["args"]["ignore_labels"]
        )
        counts[strategy] += 1
        want = c["output"]
        assert len(got) == len(want), (c["text"], got)
        for g, w in zip(got, want):
            assert set(g) == set(w), (g, w)
            for key, wv in w.items():
                ok = close(g[key], wv) if key == "score" else g[key] == wv
                assert ok, f"{key}: got {g} want {w}"
    assert counts["none"] >= 3 and counts["simple"] >= 3, counts


def qa_same(got, want):
    """HF's shape (a dict for one answer, else a list); text/start/end exact."""
    assert isinstance(got, dict) == isinstance(want, dict), (got, want)
    got, want = ([got], [want]) if isinstance(want, dict) else (got, want)
    assert len(got) == len(want), (got, want)
    for g, w in zip(got, want):
        assert set(g) == {"score", "start", "end", "answer"}
        assert (g["answer"], g["start"], g["end"]) == (w["answer"], w["start"], w["end"]), (g, w)
        assert close(g["score"], w["score"]), (g, w)


@pytest.mark.parametrize("model", ["bert_qa", "roberta_qa"])
def test_question_answering_matches_pipeline(model):
    p = pipelines()
    eng = engine(model)
    cases = [c for c in p["question_answering"] if c["model"] == model]
    assert cases
    for c in cases:
        a = c["args"]
        kwargs = dict(
            top_k=a["top_k"],
            doc_stride=a["doc_stride"],
            max_answer_len=a["max_answer_len"],
            max_seq_len=a["max_seq_len"],
            max_question_len=a["max_question_len"],
            handle_impossible_answer=a["handle_impossible_answer"],
            align_to_words=a["align_to_words"],
        )
        context = p["qa_contexts"][c["context_name"]]
        qa_same(eng.question_answering(c["question"], context, **kwargs), c["output"])
    # Lists: one result per (question, context), equal to one at a time.
    first = cases[0]
    ctx = p["qa_contexts"][first["context_name"]]
    qs = [c["question"] for c in cases if c["context_name"] == first["context_name"]][:4]
    many = eng.question_answering(qs, [ctx] * len(qs))
    assert many == [eng.question_answering(q, ctx) for q in qs]


def test_detect_matches_discriminator_logits():
    eng = engine("electra_disc")
    logits = load_golden("electra_disc")["logits"]
    texts = golden_meta("electra_disc")["texts"]
    for s, text in enumerate(texts):
        got = eng.detect(text)
        assert got
        for t in got:
            assert set(t) == {"index", "token", "start", "end", "logit", "probability"}
            want = 1.0 / (1.0 + np.exp(-float(logits[s, t["index"]])))
            assert abs(t["probability"] - want) < ATOL, (t, want)
            assert abs(t["logit"] - float(logits[s, t["index"]])) < 1e-4, t
    assert eng.detect(texts) == [eng.detect(t) for t in texts]


@pytest.mark.parametrize("pooling", ["cls", "mean", "pooler", "none"])
def test_embed_poolings_match_hf_outputs(pooling):
    name = "bert_model_f16"
    eng = engine(name)
    texts = golden_meta(name)["texts"]
    g = load_golden(name)
    hs, mask, pooled = g["last_hidden_state"], g["attention_mask"], g["pooler_output"]
    got = eng.embed(texts, pooling=pooling, truncate=False)
    if pooling != "none":
        assert isinstance(got, np.ndarray) and got.dtype == np.float32
        assert got.shape == (len(texts), hs.shape[2])
    for s in range(len(texts)):
        n = int(mask[s].sum())
        want = {
            "cls": hs[s, 0],
            "pooler": pooled[s],
            "mean": hs[s, :n].astype(np.float64).mean(axis=0),
            "none": hs[s, :n],
        }[pooling]
        assert got[s].dtype == np.float32
        assert got[s].shape == want.shape, (got[s].shape, want.shape)
        assert np.abs(got[s] - want).max() <= 1e-4, f"{pooling} text {s}"


def test_embed_single_string_is_one_row():
    eng = engine("bert_model_f16")
    texts = golden_meta("bert_model_f16")["texts"]
    many = eng.embed(texts)
    one = eng.embed(texts[1])
    assert one.shape == (many.shape[1],) and one.dtype == np.float32
    np.testing.assert_array_equal(one, eng.embed([texts[1]])[0])
    assert eng.embed([]).shape == (0, eng.hidden_size)
    tokens = eng.embed(texts[1], pooling="none")
    assert tokens.ndim == 2 and tokens.shape[1] == eng.hidden_size


def test_embed_normalize_gives_unit_vectors():
    eng = engine("bert_model_f16")
    v = eng.embed(["hello there", "the cat sat"], pooling="mean", normalize=True)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-6)
    raw = eng.embed(["hello there", "the cat sat"], pooling="mean")
    np.testing.assert_allclose(v, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)


@pytest.mark.parametrize(
    "model,folder", [("bert_mlm", "wordpiece"), ("roberta_mlm", "bpe"), ("albert_cls", "unigram")]
)
def test_tokenize_matches_hf(model, folder):
    eng = engine(model)
    limit = eng.max_seq_length  # the model's own limit: no sentence-transformers files
    cases = json.loads((FIXTURES / "tokenize" / f"{folder}.json").read_text())
    fits = 0
    for c in cases:
        if len(c["input_ids"]) > limit:
            # Longer than the model takes: refused without truncation.
            with pytest.raises(ValueError, match="more than the limit"):
                eng.tokenize(c["text"], c["pair"], truncate=False)
            continue
        fits += 1
        got = eng.tokenize(c["text"], c["pair"], truncate=False)
        assert got["input_ids"] == c["input_ids"], c["text"]
        assert got["token_type_ids"] == c["token_type_ids"], c["text"]
        assert got["attention_mask"] == c["attention_mask"], c["text"]
        assert got["tokens"] == c["tokens"], c["text"]
        assert got["offsets"] == [tuple(o) for o in c["offsets"]], c["text"]
    assert fits >= 15, fits

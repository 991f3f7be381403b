"""Real clients against a live `bertrt serve`: the `openai` SDK's
embeddings (float and base64) and huggingface_hub's InferenceClient
(feature_extraction on /embed; fill_mask, question_answering and
token_classification on bertrt's task routes), each answer compared with
the CLI's on the same model, and MiniLM's with the committed
sentence-transformers golden."""

import json
import os

import numpy as np
import openai
from huggingface_hub import InferenceClient

from conftest import FIXTURES, cli, model_path

TEXTS = ["Hello world", "The cat sat on the mat and looked at the lake."]


def cli_embeddings(texts):
    return np.array(cli("embed", "--model", model_path("minilm"), *texts), dtype=np.float32)


def max_abs(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max())


def test_openai_sdk_embeddings_float_and_base64(serve):
    s = serve("minilm")
    client = openai.OpenAI(base_url=s.base + "/v1", api_key="unused")
    want = cli_embeddings(TEXTS)
    r = client.embeddings.create(model="my-minilm", input=TEXTS, encoding_format="float")
    assert r.model == "my-minilm"
    assert [d.index for d in r.data] == [0, 1]
    got = np.array([d.embedding for d in r.data], dtype=np.float32)
    assert max_abs(got, want) <= 1e-6, "float answer differs from the CLI's"
    assert r.usage.prompt_tokens == r.usage.total_tokens > len(TEXTS)

    b = client.embeddings.create(model="my-minilm", input=TEXTS, encoding_format="base64")
    decoded = np.array([np.frombuffer(__import__("base64").b64decode(d.embedding), dtype="<f4")
                        for d in b.data])
    assert np.array_equal(decoded, got), "base64 answer differs from the float one"

    # The committed sentence-transformers golden (cosine >= 0.99999).
    with open(os.path.join(FIXTURES, "golden", "minilm.json")) as f:
        golden = json.load(f)
    r = client.embeddings.create(model="m", input=golden["sentences"], encoding_format="float")
    for i, (d, g) in enumerate(zip(r.data, golden["embeddings"])):
        e, g = np.array(d.embedding, dtype=np.float64), np.array(g, dtype=np.float64)
        cos = e @ g / (np.linalg.norm(e) * np.linalg.norm(g))
        assert cos >= 0.99999, "sentence %d: cosine %.7f with sentence-transformers" % (i, cos)


def test_inference_client_feature_extraction(serve):
    s = serve("minilm")
    client = InferenceClient(model=s.base + "/embed")
    got = client.feature_extraction(TEXTS)
    assert max_abs(got, cli_embeddings(TEXTS)) <= 1e-6, "/embed differs from the CLI"


def test_inference_client_fill_mask(serve):
    s = serve("bert_mlm")
    text = "the cat [MASK] on the mat"
    got = InferenceClient(model=s.base + "/fill-mask").fill_mask(text, top_k=3)
    want = cli("fill-mask", "--model", model_path("bert_mlm"), "--top-k", "3", text)[0]
    assert len(got) == len(want) == 3
    for g, w in zip(got, want):
        assert (g.token, g.token_str, g.sequence) == (w["token"], w["token_str"], w["sequence"])
        assert abs(g.score - w["score"]) <= 1e-6


def test_inference_client_question_answering(serve):
    s = serve("bert_qa")
    q, c = "where is the cat", "the cat sat on the mat in paris"
    client = InferenceClient(model=s.base + "/question-answering")
    want = cli("qa", "--model", model_path("bert_qa"), "--question", q, "--context", c, "--top-k", "2")
    want = want[0] if isinstance(want[0], list) else want  # one question: the CLI may nest its answers
    got = client.question_answering(question=q, context=c, top_k=2)
    assert len(got) == len(want) == 2
    for g, w in zip(got, want):
        assert (g.answer, g.start, g.end) == (w["answer"], w["start"], w["end"])
        assert abs(g.score - w["score"]) <= 1e-6
    one = client.question_answering(question=q, context=c)
    assert (one.answer, one.start, one.end) == (want[0]["answer"], want[0]["start"], want[0]["end"])


def test_inference_client_token_classification(serve):
    s = serve("bert_tokcls")
    text = "john lives in paris"
    client = InferenceClient(model=s.base + "/token-classification")
    got = client.token_classification(text)
    want = cli("classify", "--tokens", "--model", model_path("bert_tokcls"), text)[0]
    assert len(got) == len(want) > 0
    for g, w in zip(got, want):
        assert (g.entity, g.word, g.start, g.end) == (w["entity"], w["word"], w["start"], w["end"])
        assert abs(g.score - w["score"]) <= 1e-6
    grouped = client.token_classification(text, aggregation_strategy="simple")
    want = cli("classify", "--tokens", "--aggregation", "simple", "--model", model_path("bert_tokcls"), text)[0]
    assert [(g.entity_group, g.word, g.start, g.end) for g in grouped] == \
        [(w["entity_group"], w["word"], w["start"], w["end"]) for w in want]

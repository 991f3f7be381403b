"""Real weights: all-MiniLM-L6-v2 (from the HF cache, put there by
scripts/setup-minilm.sh) against sentence-transformers' own embeddings
(tests/fixtures/golden/minilm.json, as tests/real_minilm.rs): cosine >=
0.99999, through both Engine.embed and SentenceEncoder.encode."""

import numpy as np

import bertrt
from conftest import MINILM


def cosines(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))


def test_engine_embed_matches_sentence_transformers(minilm, minilm_golden):
    got = minilm.embed(minilm_golden["sentences"])
    assert got.dtype == np.float32 and got.shape == (len(minilm_golden["sentences"]), 384)
    cos = cosines(got, minilm_golden["embeddings"])
    assert (cos >= 0.99999).all(), cos
    # The folder lists a Normalize module: unit vectors, as sentence-transformers.
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)
    assert minilm.max_seq_length == 256


def test_sentence_encoder_semantics(minilm, minilm_golden):
    sentences = minilm_golden["sentences"]
    enc = bertrt.SentenceEncoder(MINILM, device="cpu")
    assert enc.get_sentence_embedding_dimension() == 384 and enc.max_seq_length == 256
    out = enc.encode(sentences)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (len(sentences), 384)
    cos = cosines(out, minilm_golden["embeddings"])
    assert (cos >= 0.99999).all(), cos
    # One string in: one 1-D vector out.
    one = enc.encode(sentences[2])
    assert one.shape == (384,) and one.dtype == np.float32
    np.testing.assert_allclose(one, out[2], atol=1e-6)
    # convert_to_numpy=False: a list of 1-D float32 arrays (no torch).
    as_list = enc.encode(sentences, convert_to_numpy=False)
    assert isinstance(as_list, list) and len(as_list) == len(sentences)
    assert all(v.shape == (384,) and v.dtype == np.float32 for v in as_list)
    np.testing.assert_allclose(np.stack(as_list), out, atol=1e-6)
    # batch_size changes the passes, not the vectors.
    np.testing.assert_allclose(enc.encode(sentences, batch_size=1), out, atol=1e-6)
    # Already normalised by the model's Normalize module.
    np.testing.assert_allclose(enc.encode(sentences, normalize_embeddings=True), out, atol=1e-6)
    # Equal to the Engine it wraps.
    np.testing.assert_allclose(out, minilm.embed(sentences), atol=1e-6)
    empty = enc.encode([])
    assert empty.shape == (0, 384) and empty.dtype == np.float32
    enc.encode(sentences, show_progress_bar=True)


def test_sentence_encoder_normalize_embeddings_on_an_unnormalised_model():
    from conftest import model_dir

    enc = bertrt.SentenceEncoder(model_dir("bert_model_f16"), device="cpu")
    raw = enc.encode(["hello there", "a cat"])
    unit = enc.encode(["hello there", "a cat"], normalize_embeddings=True)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    np.testing.assert_allclose(unit, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)

"""Bad inputs raise the documented exception types with the engine's message:
TypeError (wrong types), ValueError (bad values), FileNotFoundError (a missing
model folder or file), RuntimeError (the device)."""

import json
import shutil
import warnings

import pytest

import bertrt
from conftest import engine, model_dir


def test_missing_model_folder_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        bertrt.Engine(str(tmp_path / "nope" / "model"), device="cpu")
    with pytest.raises(FileNotFoundError):
        bertrt.Engine("nobody/no-such-model-in-cache", device="cpu")


def test_missing_model_files_are_file_not_found(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        bertrt.Engine(str(empty), device="cpu")
    no_weights = tmp_path / "no_weights"
    shutil.copytree(model_dir("bert_mlm"), no_weights)
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no weights found"):
        bertrt.Engine(no_weights, device="cpu")  # os.PathLike accepted


def test_broken_model_file_is_value_error(tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(model_dir("bert_mlm"), broken)
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json"):
        bertrt.Engine(str(broken), device="cpu")
    cfg = json.loads((tmp_path / "broken" / "tokenizer.json").read_text())
    assert cfg  # the tokenizer is fine; only config.json is broken


def test_constructor_arguments():
    with pytest.raises(TypeError, match="model"):
        bertrt.Engine(123)
    with pytest.raises(ValueError, match="device 'tpu'"):
        bertrt.Engine(model_dir("bert_mlm"), device="tpu")
    with pytest.raises(ValueError, match="threads must be at least 1"):
        bertrt.Engine(model_dir("bert_mlm"), device="cpu", threads=0)
    with pytest.raises(ValueError, match="dtype 'f8'"):
        bertrt.Engine(model_dir("bert_mlm"), device="cpu", dtype="f8")
    with pytest.raises(ValueError, match="dtype f16 is not available on device cpu"):
        bertrt.Engine(model_dir("bert_mlm"), device="cpu", dtype="f16")
    with pytest.raises(ValueError, match="dtype bf16 is not available on device cuda:0"):
        bertrt.Engine(model_dir("bert_mlm"), device="cuda", dtype="bf16")
    with pytest.raises(TypeError):
        bertrt.Engine(model_dir("bert_mlm"), device="cpu", threads="two")


def test_cuda_without_a_device_is_runtime_error():
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        auto = bertrt.Engine(model_dir("bert_mlm"), device="auto")
    if not any("no usable CUDA device" in w for w in auto.warnings):
        pytest.skip(f"a CUDA device is present ({auto.backend}): nothing to refuse")
    with pytest.raises(RuntimeError, match="device"):
        bertrt.Engine(model_dir("bert_mlm"), device="cuda")


def test_auto_fallback_warns():
    with pytest.warns(UserWarning) as rec:
        e = bertrt.Engine(model_dir("bert_mlm"), device="auto")
    if "cuda" in e.backend:
        pytest.skip("a CUDA device is present: no fallback to warn about")
    assert any("running on the CPU" in str(w.message) for w in rec)


def test_task_argument_types_and_values():
    mlm = engine("bert_mlm")
    with pytest.raises(TypeError, match="texts: expected a str or a list of str, got int"):
        mlm.embed(123)
    with pytest.raises(TypeError, match=r"texts\[1\]: expected str, got int"):
        mlm.embed(["a", 3])
    with pytest.raises(ValueError, match="input 0 is empty"):
        mlm.embed([" "])
    with pytest.raises(ValueError, match="pooling 'max'"):
        mlm.embed("a", pooling="max")
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        mlm.embed("a", batch_size=0)
    with pytest.raises(ValueError, match="truncation is off"):
        mlm.embed("word " * 200, truncate=False)
    with pytest.warns(UserWarning, match="input 0 truncated"):
        mlm.embed("word " * 200)
    with pytest.raises(ValueError, match=r"no mask token .*\[MASK\]"):
        mlm.fill_mask("no mask here")
    with pytest.raises(ValueError, match="top_k must be at least 1"):
        mlm.fill_mask("a [MASK] b", top_k=0)
    with pytest.raises(TypeError):
        mlm.fill_mask("a [MASK] b", top_k="five")
    with pytest.raises(ValueError, match="ForSequenceClassification"):
        mlm.classify("some text")
    with pytest.raises(ValueError, match="ElectraForPreTraining"):
        mlm.detect("some text")
    with pytest.raises(ValueError, match="ForTokenClassification"):
        mlm.token_classification("some text")
    with pytest.raises(TypeError, match="text: expected a str"):
        mlm.tokenize(["a list"])
    cls = engine("bert_cls")
    with pytest.raises(ValueError, match="has no MLM head"):
        cls.fill_mask("a [MASK] b")
    with pytest.raises(ValueError, match="text_pair: give one per text"):
        cls.classify(["a", "b"], text_pair="c")
    with pytest.raises(ValueError, match="empty text"):
        cls.classify("")
    tok = engine("bert_tokcls")
    with pytest.raises(ValueError, match="aggregation_strategy 'max'"):
        tok.token_classification("John", aggregation_strategy="max")
    qa = engine("bert_qa")
    with pytest.raises(ValueError, match="two lists of equal length"):
        qa.question_answering(["who?", "what?"], ["ctx"])
    with pytest.raises(ValueError, match="max_answer_len must be at least 1"):
        qa.question_answering("who?", "It is red.", max_answer_len=0)
    with pytest.raises(TypeError, match="question: expected a str or a list of str, got dict"):
        qa.question_answering({"q": 1}, "ctx")


def test_sentence_encoder_arguments():
    enc = bertrt.SentenceEncoder(model_dir("bert_model_f16"), device="cpu")
    with pytest.raises(TypeError, match="sentences"):
        enc.encode(5)
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        enc.encode(["a"], batch_size=0)
    with pytest.raises(TypeError, match="batch_size"):
        enc.encode(["a"], batch_size=1.5)

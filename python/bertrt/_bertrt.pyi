"""Type stubs for bertrt's native module (bertrt._bertrt)."""

import os
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple, TypedDict, Union, overload

import numpy as np
import numpy.typing as npt

__version__: str

class MaskPrediction(TypedDict):
    score: float
    token: int
    token_str: str
    sequence: str

class Answer(TypedDict):
    score: float
    start: int
    end: int
    answer: str

class TokenLabel(TypedDict):
    entity: str
    score: float
    index: int
    word: str
    start: int
    end: int

class EntityGroup(TypedDict):
    entity_group: str
    score: float
    word: str
    start: int
    end: int

class LabelScore(TypedDict):
    label: str
    score: float

class TokenScore(TypedDict):
    index: int
    token: str
    start: int
    end: int
    logit: float
    probability: float

class Tokenized(TypedDict):
    tokens: List[str]
    input_ids: List[int]
    token_type_ids: List[int]
    attention_mask: List[int]
    offsets: List[Tuple[int, int]]

Texts = Union[List[str], Tuple[str, ...]]

class Engine:
    """A loaded model (config, tokenizer, weights on a device); safe to share
    between threads. Every method releases the GIL while it tokenizes and
    runs the model.

    ``model``: a model folder, or a hub id found in the HF cache (as the CLI's
    ``--model``). ``device``: "auto" (CUDA when present, else the CPU with a
    warning), "cpu", "cuda" or "cuda:N". ``dtype``: None (the device's
    default), "f32" or "bf16" on the CPU, "f16" on CUDA, as the CLI's
    ``--dtype``. ``threads``: CPU threads for every parallel part of this
    engine's forward pass (None: one per logical CPU), as ``--threads``.

    Raises FileNotFoundError (no such folder or hub snapshot, or a missing
    config/weights/tokenizer file), ValueError (a bad argument or model
    file), RuntimeError (the device), TypeError (wrong argument types).
    """

    def __init__(
        self,
        model: Union[str, "os.PathLike[str]"],
        device: str = "auto",
        dtype: Optional[str] = None,
        threads: Optional[int] = None,
    ) -> None: ...
    @property
    def model_dir(self) -> str: ...
    @property
    def backend(self) -> str:
        """Where it runs, e.g. "cpu (f32, 8 threads)"."""
    @property
    def dtype(self) -> Optional[str]:
        """The dtype asked for (None: the device's default)."""
    @property
    def threads(self) -> Optional[int]:
        """The thread count asked for (None: one per logical CPU)."""
    @property
    def warnings(self) -> List[str]:
        """What was warned about at load (unused tensors, device fallback)."""
    @property
    def architecture(self) -> str: ...
    @property
    def hidden_size(self) -> int: ...
    @property
    def max_seq_length(self) -> int:
        """embed's token limit: sentence-transformers' max_seq_length, else the model's."""
    @overload
    def embed(
        self,
        texts: str,
        *,
        pooling: Optional[Literal["cls", "mean", "pooler", "none"]] = None,
        normalize: bool = False,
        truncate: bool = True,
        batch_size: int = 32,
        warn_truncated: bool = True,
    ) -> npt.NDArray[np.float32]: ...
    @overload
    def embed(
        self,
        texts: Texts,
        *,
        pooling: Optional[Literal["cls", "mean", "pooler", "none"]] = None,
        normalize: bool = False,
        truncate: bool = True,
        batch_size: int = 32,
        warn_truncated: bool = True,
    ) -> Union[npt.NDArray[np.float32], List[npt.NDArray[np.float32]]]:
        """float32 embeddings: ``[n, dim]`` for a list, ``[dim]`` for a str;
        pooling="none" gives ``[tokens, dim]`` per input (a list of them for
        a list). Pooling, normalisation and max_seq_length default to the
        folder's sentence-transformers settings (else CLS, unnormalised), as
        ``bertrt embed``; ``normalize=True`` adds L2 normalisation."""
    @overload
    def fill_mask(self, text: str, *, top_k: int = 5) -> Union[List[MaskPrediction], List[List[MaskPrediction]]]: ...
    @overload
    def fill_mask(self, text: Texts, *, top_k: int = 5) -> List[Union[List[MaskPrediction], List[List[MaskPrediction]]]]:
        """HF's fill-mask pipeline: one list per mask (unwrapped for one mask)."""
    @overload
    def question_answering(
        self,
        question: str,
        context: str,
        *,
        top_k: int = 1,
        doc_stride: Optional[int] = None,
        max_answer_len: int = 15,
        max_seq_len: Optional[int] = None,
        max_question_len: int = 64,
        handle_impossible_answer: bool = False,
        align_to_words: bool = True,
    ) -> Union[Answer, List[Answer]]: ...
    @overload
    def question_answering(
        self,
        question: Texts,
        context: Texts,
        *,
        top_k: int = 1,
        doc_stride: Optional[int] = None,
        max_answer_len: int = 15,
        max_seq_len: Optional[int] = None,
        max_question_len: int = 64,
        handle_impossible_answer: bool = False,
        align_to_words: bool = True,
    ) -> List[Union[Answer, List[Answer]]]:
        """HF's question-answering pipeline: a dict for top_k=1, else a list best first."""
    @overload
    def token_classification(
        self,
        text: str,
        *,
        aggregation_strategy: Literal["none", "simple"] = "none",
        ignore_labels: Optional[List[str]] = None,
    ) -> Union[List[TokenLabel], List[EntityGroup]]: ...
    @overload
    def token_classification(
        self,
        text: Texts,
        *,
        aggregation_strategy: Literal["none", "simple"] = "none",
        ignore_labels: Optional[List[str]] = None,
    ) -> List[Union[List[TokenLabel], List[EntityGroup]]]:
        """HF's token-classification pipeline (aggregation "none" or "simple")."""
    @overload
    def classify(self, text: str, *, text_pair: Optional[str] = None, top_k: Optional[int] = None) -> List[LabelScore]: ...
    @overload
    def classify(
        self, text: Texts, *, text_pair: Optional[Texts] = None, top_k: Optional[int] = None
    ) -> List[List[LabelScore]]:
        """HF's text-classification pipeline with top_k=None: every label, best first."""
    @overload
    def detect(self, text: str) -> List[TokenScore]: ...
    @overload
    def detect(self, text: Texts) -> List[List[TokenScore]]:
        """ELECTRA replaced-token detection: per token, sigmoid of the discriminator's logit."""
    def tokenize(self, text: str, pair: Optional[str] = None, *, truncate: bool = True) -> Tokenized:
        """HF's tokenizer output with character offsets (special tokens (0, 0))."""

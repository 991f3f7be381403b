"""``SentenceEncoder``: ``SentenceTransformer.encode`` for inference, on bertrt.

The model folder's sentence-transformers files decide pooling, normalisation
(a ``Normalize`` module) and ``max_seq_length``, as in sentence-transformers;
inputs longer than that are cut silently, as there.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import List, Optional, Sequence, Union

import numpy as np

from ._bertrt import Engine

logger = logging.getLogger(__name__)


class SentenceEncoder:
    """Swap in for ``SentenceTransformer(model, device=...)`` when only
    ``encode`` is needed: the same vectors (cosine >= 0.99999 on MiniLM).

    ``model`` is a folder or a hub id in the HF cache; ``device`` is "auto"
    (or None, as in sentence-transformers: CUDA when present), "cpu", "cuda"
    or "cuda:N"; ``dtype`` and ``threads`` as for :class:`bertrt.Engine`.
    """

    def __init__(
        self,
        model_name_or_path: Union[str, "os.PathLike[str]"],
        device: Optional[str] = None,
        *,
        dtype: Optional[str] = None,
        threads: Optional[int] = None,
    ) -> None:
        self.engine = Engine(model_name_or_path, device=device or "auto", dtype=dtype, threads=threads)

    @property
    def max_seq_length(self) -> int:
        """Tokens per input (special tokens included); longer inputs are cut."""
        return self.engine.max_seq_length

    def get_sentence_embedding_dimension(self) -> int:
        return self.engine.hidden_size

    def encode(
        self,
        sentences: Union[str, Sequence[str]],
        batch_size: int = 32,
        show_progress_bar: Optional[bool] = None,
        convert_to_numpy: bool = True,
        normalize_embeddings: bool = False,
    ) -> Union[np.ndarray, List[np.ndarray]]:
        """Embeds ``sentences`` with sentence-transformers' semantics:

        - one string gives one 1-D float32 array; a list gives a 2-D
          ``[len(sentences), dim]`` float32 array (``[0, dim]`` for an empty
          list);
        - ``convert_to_numpy=False`` gives a list of 1-D float32 numpy arrays
          (sentence-transformers gives torch tensors; bertrt does not need
          torch), or one 1-D array for one string;
        - ``normalize_embeddings=True`` L2-normalises (a model whose folder
          lists a ``Normalize`` module is normalised either way);
        - ``batch_size`` inputs per forward pass; ``show_progress_bar=None``
          shows one when this module's logger is at INFO or DEBUG, as
          sentence-transformers does (tqdm when installed, else a line on
          stderr).
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int):
            raise TypeError(f"batch_size: expected int, got {type(batch_size).__name__}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        single = isinstance(sentences, str)
        if single:
            items: List[str] = [sentences]  # type: ignore[list-item]
        elif isinstance(sentences, (list, tuple)):
            items = list(sentences)
        else:
            raise TypeError(
                f"sentences: expected a str or a list of str, got {type(sentences).__name__}"
            )
        if show_progress_bar is None:
            show_progress_bar = logger.getEffectiveLevel() in (logging.INFO, logging.DEBUG)
        dim = self.engine.hidden_size
        parts: List[np.ndarray] = []
        with _Progress(len(items), show_progress_bar and len(items) > 0) as bar:
            for start in range(0, len(items), batch_size):
                chunk = items[start : start + batch_size]
                parts.append(
                    self.engine.embed(
                        chunk,
                        normalize=bool(normalize_embeddings),
                        batch_size=batch_size,
                        warn_truncated=False,
                    )
                )
                bar.update(len(chunk))
        out = np.concatenate(parts) if parts else np.zeros((0, dim), dtype=np.float32)
        if single:
            return out[0]
        if not convert_to_numpy:
            return list(out)
        return out

    def __repr__(self) -> str:
        return f"SentenceEncoder({self.engine!r})"


class _Progress:
    """tqdm when installed, else a counter line on stderr; nothing when off."""

    def __init__(self, total: int, on: bool) -> None:
        self.total, self.on, self.done, self.bar = total, on, 0, None
        if on:
            try:
                from tqdm.auto import tqdm  # type: ignore[import-not-found]

                self.bar = tqdm(total=total, desc="Batches", unit="sentence")
            except ImportError:
                self.bar = None

    def __enter__(self) -> "_Progress":
        return self

    def update(self, n: int) -> None:
        if not self.on:
            return
        if self.bar is not None:
            self.bar.update(n)
            return
        self.done += n
        sys.stderr.write(f"\rencoded {self.done}/{self.total}")
        sys.stderr.flush()

    def __exit__(self, *exc: object) -> None:
        if not self.on:
            return
        if self.bar is not None:
            self.bar.close()
        else:
            sys.stderr.write("\n")

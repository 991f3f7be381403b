"""bertrt: inference for BERT-family encoders (BERT, ALBERT, RoBERTa, XLM-R,
ELECTRA) from Rust: fp16 CUDA kernels, or an f32 CPU backend.

``Engine`` loads a model folder (or a hub id in the HF cache) and runs the
tasks with the same results as the ``bertrt`` CLI and the HF pipelines;
``SentenceEncoder`` is a drop-in for ``SentenceTransformer.encode``.
"""

from ._bertrt import Engine, __version__
from .encoder import SentenceEncoder

__all__ = ["Engine", "SentenceEncoder", "__version__"]

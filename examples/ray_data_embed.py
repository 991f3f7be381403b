"""Embed a corpus bigger than one machine with bertrt on Ray Data.

Ray Data reads the corpus (text lines or Parquet) in blocks, streams them
through a pool of workers that each hold one ``bertrt.Engine`` (loaded once
per worker, not per batch), and writes ``id`` + ``embedding`` to Parquet.
The embedding column is ``fixed_size_list<float32>[dim]``, readable by any
Parquet reader.

Sizing: one worker per GPU (``num_gpus=1``: each worker sees one device and
runs "cuda"); on CPU-only nodes, workers of ``--cpus-per-worker`` cores with
that many engine threads, leaving a core or so per node for Ray Data's read
and write tasks (workers that take every CPU starve them and nothing moves). Batch size by tokens: a batch of rows is packed
without padding, so pick ``--batch-size`` rows to give about 16k-32k tokens
per forward pass on a GPU (e.g. 512 rows of ~40 tokens), a few thousand on a
CPU.

Local run:
    python examples/ray_data_embed.py --input corpus.parquet --output out/ \\
        --model sentence-transformers/all-MiniLM-L6-v2 --workers 2
On a cluster (``ray start --head`` / ``ray start --address=...`` on each
node, bertrt installed on every node, the model in every node's HF cache or
on shared storage):
    RAY_ADDRESS=auto python examples/ray_data_embed.py --input s3://bucket/corpus/ \\
        --output s3://bucket/embeddings/ --gpus-per-worker 1 --workers 8
"""

from __future__ import annotations

import argparse
from typing import List, Optional

import numpy as np
import pyarrow as pa


class Embedder:
    """The callable class Ray Data keeps alive per worker: one Engine each."""

    def __init__(
        self,
        model: str,
        device: str,
        threads: Optional[int],
        batch_size: int,
        id_column: str,
        text_column: str,
    ) -> None:
        import bertrt

        self.engine = bertrt.Engine(model, device=device, threads=threads)
        self.batch_size = batch_size
        self.id_column = id_column
        self.text_column = text_column

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts: List[str] = batch.column(self.text_column).to_pylist()
        vectors = self.engine.embed(texts, batch_size=self.batch_size)
        dim = self.engine.hidden_size
        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
        return pa.table(
            {
                self.id_column: batch.column(self.id_column),
                "embedding": pa.FixedSizeListArray.from_arrays(flat, dim),
            }
        )


def embed_corpus(
    input_path: str,
    output_path: str,
    model: str,
    *,
    workers: int = 2,
    gpus_per_worker: float = 0,
    cpus_per_worker: float = 1,
    batch_size: int = 256,
    id_column: str = "id",
    text_column: str = "text",
) -> None:
    """Reads ``input_path`` (Parquet with ``id_column`` and ``text_column``,
    or text files: one input per line, the line being its own id), embeds it
    on ``workers`` Ray actors and writes Parquet files under ``output_path``."""
    import ray

    if input_path.endswith((".txt", ".text")):
        ds = ray.data.read_text(input_path)  # column "text"
        id_column, text_column = "text", "text"
    else:
        ds = ray.data.read_parquet(input_path).select_columns([id_column, text_column])
    on_gpu = gpus_per_worker > 0
    ds = ds.map_batches(
        Embedder,
        fn_constructor_kwargs=dict(
            model=model,
            device="cuda" if on_gpu else "cpu",
            threads=None if on_gpu else max(1, round(cpus_per_worker)),
            batch_size=batch_size,
            id_column=id_column,
            text_column=text_column,
        ),
        batch_format="pyarrow",
        batch_size=batch_size,
        concurrency=workers,
        num_gpus=gpus_per_worker,
        num_cpus=0 if on_gpu else cpus_per_worker,
    )
    ds.write_parquet(output_path)


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input", required=True, help="Parquet file/folder, or .txt file(s)")
    p.add_argument("--output", required=True, help="folder for the Parquet output")
    p.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--gpus-per-worker", type=float, default=0, help="1 on GPU clusters")
    p.add_argument(
        "--cpus-per-worker",
        type=float,
        default=1,
        help="CPUs Ray reserves per CPU worker (its engine threads, at least 1); "
        "leave some of the cluster's CPUs free for reading and writing",
    )
    p.add_argument("--batch-size", type=int, default=256, help="rows per forward pass")
    p.add_argument("--id-column", default="id")
    p.add_argument("--text-column", default="text")
    a = p.parse_args(argv)

    import ray

    if not ray.is_initialized():
        ray.init()  # RAY_ADDRESS=auto joins a running cluster
    embed_corpus(
        a.input,
        a.output,
        a.model,
        workers=a.workers,
        gpus_per_worker=a.gpus_per_worker,
        cpus_per_worker=a.cpus_per_worker,
        batch_size=a.batch_size,
        id_column=a.id_column,
        text_column=a.text_column,
    )


if __name__ == "__main__":
    main()

"""``Embedder``: the model as a Ray Data ``map_batches`` class, for people already inside Ray.

import ray, bertserve.dataset
ds = ray.data.read_parquet("s3://bucket/docs/")
vectors = ds.map_batches(
    bertserve.dataset.Embedder,
    fn_constructor_kwargs={"repo": "/models", "model": "minilm", "pooling": "mean"},
    concurrency=4,      # actors: each loads the package once
    num_cpus=2,         # CPUs per actor = its onnxruntime intra-op threads
    batch_size=1024,    # rows per call: sorted by length and batched inside the actor
)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .engine import to_dtype
from .options import FeatureOptions


def _assigned_cpus() -> int:
    """The CPUs Ray gave this actor (its ``num_cpus``), 0 outside Ray (every CPU)."""
    try:
        import ray

        if ray.is_initialized():
            cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 0)
            return max(1, int(cpus)) if cpus else 0
    except ImportError:
        pass
    return 0


class Embedder:
    """A stateful ``map_batches`` callable: loads the model package once (per actor) and adds
    ``vector`` (``(rows, width)`` in ``dtype``; bfloat16 as uint16 bits) to each batch, plus
    ``hidden_states_<k>`` (one ``(tokens, hidden)`` array per row) when ``layers`` are asked.

    ``threads``: onnxruntime intra-op threads; by default the CPUs Ray assigned to the actor
    (``num_cpus``), so actors never oversubscribe a node. ``target``: call running servers
    (``host:port,...``) instead of loading the model. Other options as ``bertserve embed``.
    """

    def __init__(
        self,
        repo: str | None = None,
        model: str = "",
        variant: str | None = None,
        *,
        text_column: str = "text",
        output_column: str = "vector",
        threads: int | None = None,
        target: str | None = None,
        pooling: str | None = None,
        layers: str | list[int] | None = None,
        aggregate: str | None = None,
        normalize: bool = False,
        dtype: str = "float32",
        truncate: bool = False,
        long_text: str | None = None,
        chunk_tokens: int | None = None,
        chunk_overlap: int | None = None,
        chunk_pooling: str | None = None,
    ) -> None:
        from .engine import ClientEngine, InProcessEngine

        if not model:
            raise ValueError("Embedder needs model= (a model name of the repository)")
        self.options = FeatureOptions.parse(
            pooling=pooling,
            layers=layers,
            aggregate=aggregate,
            normalize=normalize,
            dtype=dtype,
            truncate=truncate,
            long_text=long_text,
            chunk_tokens=chunk_tokens,
            chunk_overlap=chunk_overlap,
            chunk_pooling=chunk_pooling,
        )
        self.text_column = text_column
        self.output_column = output_column
        if target:
            self.engine: Any = ClientEngine(target, model, variant, self.options)
        elif repo:
            cpus = _assigned_cpus() if threads is None else threads
            self.engine = InProcessEngine(repo, model, variant, cpus, self.options)
        else:
            raise ValueError("Embedder needs repo= (a model repository) or target= (servers)")

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        if self.text_column not in batch:
            raise ValueError(
                f"no column {self.text_column!r} in the batch (text_column=); "
                f"it has {sorted(batch)}"
            )
        texts = list(batch[self.text_column])
        for row, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(
                    f"row {row} of the batch: {self.text_column!r} is {type(text).__name__}, "
                    "not a string"
                )
        features = self.engine.outputs(texts)
        result = dict(batch)
        if "sentence_embedding" in features:
            result[self.output_column] = to_dtype(
                features["sentence_embedding"], self.options.dtype
            )
        for name, per_row in features.items():
            if name.startswith("hidden_states."):
                ragged = np.empty(len(per_row), dtype=object)
                ragged[:] = [to_dtype(array, self.options.dtype) for array in per_row]
                result[name.replace(".", "_")] = ragged
        return result

    def close(self) -> None:
        """Release the model (an actor that exits needs not: the engine's thread is a daemon)."""
        self.engine.close()

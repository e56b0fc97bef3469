"""The ways ``bertserve bench --peers`` compares that are not bertserve: PyTorch ``BertModel``,
sentence-transformers and a raw onnxruntime session, and what every way's figures are kept in."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

BATCH = 32  # what a user's own loop would send
CALLERS = 8


@dataclass
class Way:
    """One way of computing the corpus's vectors and what it took, round by round."""

    name: str
    variant: str
    seconds: list[float] = field(default_factory=list)
    texts: int = 0
    tokens: int = 0  # real tokens of the corpus
    computed: list[int] = field(default_factory=list)  # padded tokens computed, per round
    cosine: float | None = None  # worst cosine to PyTorch's vectors
    note: str = ""

    @property
    def median_s(self) -> float:
        return float(np.median(self.seconds)) if self.seconds else float("nan")

    @property
    def sentences_per_s(self) -> float:
        return self.texts / self.median_s if self.seconds else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.median_s if self.seconds else 0.0

    @property
    def padding(self) -> float | None:
        """Computed tokens over real tokens (1.0: no padding computed)."""
        return float(np.median(self.computed)) / self.tokens if self.computed else None

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "median_s": self.median_s,
            "sentences_per_s": self.sentences_per_s,
            "tokens_per_s": self.tokens_per_s,
            "padding": self.padding,
        }


@dataclass
class Latency:
    """Closed-loop latency of single short requests."""

    name: str
    variant: str
    callers: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int = 0

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "requests_per_s": self.requests_per_s}


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(batch, seq, hidden) and (batch, seq) -> (batch, hidden) float32."""
    weights = mask[..., None].astype(np.float32)
    return (hidden * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)


def worst_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return float(cos.min())


def padded_batches(lengths: Sequence[int], order: Sequence[int]) -> tuple[list[list[int]], int]:
    """Batches of ``BATCH`` in ``order`` and the tokens they compute padded."""
    batches = [list(order[i : i + BATCH]) for i in range(0, len(order), BATCH)]
    return batches, sum(len(b) * max(lengths[i] for i in b) for b in batches)


class TorchPeer:
    """transformers' BertModel on the CPU with the bench's threads, mean pooling."""

    def __init__(self, checkpoint: Path, threads: int) -> None:
        import torch
        from transformers import AutoTokenizer, BertModel

        torch.set_num_threads(threads)
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
        self.model = BertModel.from_pretrained(str(checkpoint)).eval()
        self.max_length = min(512, self.model.config.max_position_embeddings)

    def embed(self, texts: Sequence[str], order: Sequence[int]) -> np.ndarray:
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        with self.torch.inference_mode():
            for start in range(0, len(order), BATCH):
                batch = list(order[start : start + BATCH])
                inputs = self.tokenizer(
                    [texts[i] for i in batch],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                hidden = self.model(**inputs).last_hidden_state.numpy()
                out[batch] = mean_pool(hidden, inputs["attention_mask"].numpy())
        return out


class SentenceTransformersPeer:
    """sentence-transformers' ``encode(batch_size=32)`` (it sorts by length itself)."""

    def __init__(self, checkpoint: Path, threads: int) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        self.model = SentenceTransformer(str(checkpoint), device="cpu")

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self.model.encode(list(texts), batch_size=BATCH, show_progress_bar=False)


class OnnxPeer:
    """A raw onnxruntime session on one variant's model.onnx, as a user would write it:
    ``tokenizers`` without padding, sorted batches, only ``last_hidden_state`` fetched."""

    def __init__(self, folder: Path, threads: int) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(512)

    def run(self, encodings: list[Any]) -> np.ndarray:
        longest = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), longest), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = encoding.ids
            mask[row, : len(encoding.ids)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        (hidden,) = self.session.run(["last_hidden_state"], feeds)
        return mean_pool(hidden, mask)

    def embed(self, texts: Sequence[str], order: Sequence[int]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(list(texts))
        out = None
        for start in range(0, len(order), BATCH):
            batch = list(order[start : start + BATCH])
            vectors = self.run([encodings[i] for i in batch])
            if out is None:
                out = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
            out[batch] = vectors
        assert out is not None
        return out

    def embed_one(self, text: str) -> np.ndarray:
        return self.run([self.tokenizer.encode(text)])

"""The measured first step of ``bertserve bench --peers``: what one round will take, before it
runs. Each way that is not bertserve (a raw onnxruntime session per variant, PyTorch,
sentence-transformers) is timed on three real batches of the corpus (its shortest, middle and
longest 8 texts), and the times fitted to the cost of a batch: fixed + per token + per token per
token of length, as the server's own batcher models it. bertserve's ways cost what the session
of their variant does, and the bulk CLI also a process start, timed once. A way's round is the
fitted cost of the batches it computes."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Shape = tuple[int, int]  # (texts, padded length) of one batch


def shapes(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> list[Shape]:
    """The (texts, padded length) of each batch of indices into ``lengths``."""
    return [(len(b), max(lengths[i] for i in b)) for b in batches if b]


def fit(timed: Sequence[tuple[Shape, float]]) -> np.ndarray:
    """Coefficients (fixed, per token, per token per token of length) of batch seconds,
    least squares on ``timed`` and none below zero (a noisy fit falls back to fewer terms)."""
    rows = np.array([[1.0, n * length, n * length * length] for (n, length), _ in timed])
    seconds = np.array([t for _, t in timed])
    for keep in ((0, 1, 2), (0, 1), (1,)):
        coef, *_ = np.linalg.lstsq(rows[:, keep], seconds, rcond=None)
        if (coef >= 0).all():
            full = np.zeros(3)
            full[list(keep)] = coef
            return full
    return np.array([0.0, float(seconds.sum() / rows[:, 1].sum()), 0.0])


def cost(coef: np.ndarray, batches: Sequence[Shape]) -> float:
    """Seconds the fitted model gives ``batches``."""
    return float(
        sum(coef @ np.array([1.0, n * length, n * length * length]) for n, length in batches)
    )


def timed(call: Callable[[], Any], repeats: int = 2) -> float:
    """Seconds of ``call`` once warm: the fastest of ``repeats`` after one unmeasured run."""
    call()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best


def probe_batches(lengths: Sequence[int], size: int = 8) -> list[list[int]]:
    """The shortest, middle and longest ``size`` texts (indices): three real batch shapes,
    small, so that the step costs little of a round."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    size = min(size, len(order))
    middle = max(0, len(order) // 2 - size // 2)
    picks = [order[:size], order[middle : middle + size], order[len(order) - size :]]
    return [p for i, p in enumerate(picks) if p and p not in picks[:i]]


def batch_model(run: Callable[[list[int]], Any], lengths: Sequence[int]) -> np.ndarray:
    """The fitted batch cost of a way that embeds a batch of text indices with ``run``, timed
    on real batches (:func:`probe_batches`)."""
    points = []
    for batch in probe_batches(lengths):
        points.append((shapes(lengths, [batch])[0], timed(lambda b=batch: run(b), 1)))
    return fit(points)


def session_model(peer: Any, texts: Sequence[str], lengths: Sequence[int]) -> np.ndarray:
    """The fitted batch cost of a raw session (an ``OnnxPeer``) on real batches of ``texts``."""
    encodings = peer.tokenizer.encode_batch(list(texts))
    return batch_model(lambda batch: peer.run([encodings[i] for i in batch]), lengths)


def process_start() -> float:
    """Seconds to start the ``bertserve`` command (the bulk CLI's fixed cost)."""
    command = [sys.executable, "-m", "bertserve.client.cli", "--version"]
    return timed(lambda: subprocess.run(command, capture_output=True, check=True), repeats=1)

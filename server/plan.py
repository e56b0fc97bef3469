"""What a batch costs and how to cut waiting sequences into the cheapest batches: a cost
model fitted per variant at warm-up and a small dynamic programme. Pure Python and numpy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# The least fixed cost a fitted model keeps per batch. onnxruntime's own per-run cost (fits of
# 1.3-7.6 ms on 2 busy cores here) plus the server's (dispatch, two thread hops, padding,
# resolving callers: 0.1-0.2 ms profiled); but warm-up timings on a busy machine can fit none
# at all, and then every split prices the same and batches come out one sequence each.
MIN_OVERHEAD_S = 5e-4


@dataclass(frozen=True)
class CostModel:
    """Seconds to run one padded batch of ``size`` sequences of ``length`` tokens:
    ``overhead_s + size * length * (per_token_s + per_token_length_s * length)``.

    The defaults are of a 6-layer, 384-wide BERT on two CPU cores; the server fits the model
    of each variant on the device it runs on (:meth:`fit`).
    """

    overhead_s: float = 1e-3
    per_token_s: float = 1.8e-4
    per_token_length_s: float = 1e-7  # attention: each token attends to every other

    def seconds(self, size: int, length: int) -> float:
        return self.overhead_s + size * length * (
            self.per_token_s + self.per_token_length_s * length
        )

    @classmethod
    def fit(cls, samples: Sequence[tuple[int, int, float]]) -> CostModel:
        """Least squares over measured (size, length, seconds); no coefficient below zero."""
        size, length, seconds = np.asarray(samples, dtype=np.float64).T
        tokens = size * length
        columns = [np.ones_like(tokens), tokens, tokens * length]
        keep = [0, 1, 2]
        while True:
            coefficients, *_ = np.linalg.lstsq(
                np.stack([columns[k] for k in keep], axis=1), seconds, rcond=None
            )
            negative = [k for k, c in zip(keep, coefficients, strict=True) if c < 0 and k != 1]
            if not negative:
                break
            keep.remove(negative[0])  # a term the noise made negative is taken as zero
        values = dict.fromkeys(range(3), 0.0)
        values.update(zip(keep, (float(c) for c in coefficients), strict=True))
        return cls(max(values[0], MIN_OVERHEAD_S), max(values[1], 1e-9), max(values[2], 0.0))

    def describe(self) -> str:
        return (
            f"{self.overhead_s * 1e3:.2f} ms a batch + {self.per_token_s * 1e6:.1f} us a token "
            f"+ {self.per_token_length_s * 1e9:.2f} ns a token per token of length"
        )


def plan_batches(
    lengths: Sequence[int], cost: CostModel, max_size: int, max_tokens: int
) -> list[int]:
    """The cheapest way to cut ``lengths`` (sorted ascending) into consecutive batches of at
    most ``max_size`` sequences and ``max_tokens`` padded tokens: the end index of each batch.

    Dynamic programme: ``best[i]``, the cheapest cost of the first ``i`` sequences, is the
    minimum over ``j`` of ``best[j] + cost.seconds(i - j, lengths[i - 1])`` (sorted, so the
    last is the longest). That cost obeys the quadrangle inequality (the per-sequence cost
    grows with ``i``), so the best ``j`` never moves left as ``i`` grows: each search starts
    where the previous one ended, which keeps a 256-sequence window well under a millisecond.
    """
    n = len(lengths)
    if n <= 1:
        return [n] if n else []
    overhead, per_token, per_token_length = (
        cost.overhead_s,
        cost.per_token_s,
        cost.per_token_length_s,
    )
    best = [0.0] * (n + 1)
    start = [0] * (n + 1)
    # among (nearly) equal costs prefer the last j, so that batches fill from the shortest end
    tie = (overhead + per_token) * 1e-9
    chosen, lowest, previous_length = 0, 0.0, -1
    for i in range(1, n + 1):
        length = int(lengths[i - 1])
        per_sequence = length * (per_token + per_token_length * length)
        low = i - max(1, min(max_size, max_tokens // max(length, 1), i))
        if length == previous_length and low <= chosen:
            first = i - 1  # same length: the earlier candidates are priced as before
        else:
            chosen = max(low, chosen)
            lowest = best[chosen] - chosen * per_sequence
            first = chosen + 1
        for j in range(first, i):
            value = best[j] - j * per_sequence
            if value <= lowest + tie:
                chosen, lowest = j, value
        best[i] = lowest + i * per_sequence + overhead
        start[i] = chosen
        previous_length = length
    ends = []
    i = n
    while i > 0:
        ends.append(i)
        i = start[i]
    return ends[::-1]

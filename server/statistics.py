"""Per-model inference statistics in the shape of Triton's ModelStatistics: counts and
cumulative durations of the v2 requests each model name answered, and of the batches each
variant's batcher ran (fed by :class:`bertserve.server.metrics.ModelMetrics`, the batcher's
observer). Process-wide, like Prometheus' default registry: one server per process."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class Duration:
    """How many times something happened and its total time (Triton's StatisticDuration)."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += max(0, ns)


@dataclass
class RequestStatistics:
    """The requests one v2 model name (and version) answered."""

    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    inference_count: int = 0  # sequences of the successful requests
    last_inference_ms: int = 0


@dataclass
class BatchStatistics:
    """The batches one variant's batcher ran: by batch size, their count and run time."""

    by_size: dict[int, Duration] = field(default_factory=lambda: defaultdict(Duration))

    @property
    def execution_count(self) -> int:
        return sum(d.count for d in self.by_size.values())


class Statistics:
    """Requests by (v2 model name, version); batches by variant label ("model/variant")."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str], RequestStatistics] = defaultdict(RequestStatistics)
        self.batches: dict[str, BatchStatistics] = defaultdict(BatchStatistics)

    def succeeded(
        self,
        name: str,
        version: str,
        *,
        sequences: int,
        total_ns: int,
        queue_ns: int,
        input_ns: int,
        infer_ns: int,
        output_ns: int,
    ) -> None:
        stats = self.requests[(name, version)]
        stats.success.add(total_ns)
        stats.queue.add(queue_ns)
        stats.compute_input.add(input_ns)
        stats.compute_infer.add(infer_ns)
        stats.compute_output.add(output_ns)
        stats.inference_count += sequences
        stats.last_inference_ms = time.time_ns() // 1_000_000

    def failed(self, name: str, version: str, total_ns: int) -> None:
        stats = self.requests[(name, version)]
        stats.fail.add(total_ns)
        stats.last_inference_ms = time.time_ns() // 1_000_000

    def batch_done(self, label: str, size: int, seconds: float) -> None:
        self.batches[label].by_size[size].add(int(seconds * 1e9))


STATISTICS = Statistics()

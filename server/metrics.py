"""Prometheus metrics of the server (prometheus-client's default registry)."""

from __future__ import annotations

from bertserve.server.statistics import STATISTICS
from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "bertserve_requests_total", "RPCs answered, by method and status code", ["method", "code"]
)
REQUEST_SECONDS = Histogram("bertserve_request_seconds", "RPC latency", ["method"])
QUEUE_SECONDS = Histogram(
    "bertserve_queue_seconds", "Time from arrival to the first batch that computes it", ["model"]
)
QUEUE_DEPTH = Gauge("bertserve_queue_requests", "Requests waiting in a batcher's queue", ["model"])
QUEUE_SEQUENCES = Gauge(
    "bertserve_queue_sequences", "Sequences waiting in a batcher's queue", ["model"]
)
QUEUE_TOKENS = Gauge("bertserve_queue_tokens", "Tokens waiting in a batcher's queue", ["model"])
BATCH_SIZE = Histogram(
    "bertserve_batch_size",
    "Sequences per batch",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
BATCH_TOKENS = Histogram(
    "bertserve_batch_tokens",
    "Padded tokens per batch (longest x count)",
    ["model"],
    buckets=(16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768),
)
INFERENCE_SECONDS = Histogram(
    "bertserve_inference_seconds", "onnxruntime time per batch", ["model"]
)
PADDING_RATIO = Histogram(
    "bertserve_padding_ratio",
    "Share of computed tokens that are padding, per batch",
    ["model"],
    buckets=(0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0),
)
TOKENS = Counter("bertserve_tokens_total", "Tokens computed, real and padding", ["model", "kind"])
DROPPED = Counter(
    "bertserve_dropped_sequences_total",
    "Waiting sequences dropped before computing (caller cancelled or deadline passed)",
    ["model", "reason"],
)


class ModelMetrics:
    """The batcher's observer for one model variant (label ``model`` = "name/variant"); the
    labelled series are looked up once, not on every batch."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._batch_size = BATCH_SIZE.labels(label)
        self._batch_tokens = BATCH_TOKENS.labels(label)
        self._inference = INFERENCE_SECONDS.labels(label)
        self._padding = PADDING_RATIO.labels(label)
        self._real = TOKENS.labels(label, "real")
        self._padded = TOKENS.labels(label, "padding")
        self._queue_seconds = QUEUE_SECONDS.labels(label)
        self._depth = (
            QUEUE_DEPTH.labels(label),
            QUEUE_SEQUENCES.labels(label),
            QUEUE_TOKENS.labels(label),
        )

    def batch_done(self, size: int, real_tokens: int, padded_tokens: int, seconds: float) -> None:
        self._batch_size.observe(size)
        self._batch_tokens.observe(padded_tokens)
        self._inference.observe(seconds)
        self._padding.observe(1 - real_tokens / max(padded_tokens, 1))
        self._real.inc(real_tokens)
        self._padded.inc(padded_tokens - real_tokens)
        STATISTICS.batch_done(self.label, size, seconds)  # the v2 ModelStatistics' batches

    def queued(self, seconds: float) -> None:
        self._queue_seconds.observe(seconds)

    def dropped(self, reason: str, sequences: int) -> None:
        DROPPED.labels(self.label, reason).inc(sequences)

    def depth(self, requests: int, sequences: int, tokens: int) -> None:
        for gauge, value in zip(self._depth, (requests, sequences, tokens), strict=True):
            gauge.set(value)


IN_FLIGHT = Gauge("bertserve_in_flight_requests", "BertService calls being served now")
STREAM_BUFFERED = Gauge(
    "bertserve_stream_buffered_bytes",
    "Computed answer bytes EmbedStreams hold that their callers have not read yet",
)
LOOP_TASKS = Gauge("bertserve_event_loop_tasks", "Tasks alive on the server's event loop")


def watch_event_loop(loop: object) -> None:
    """Report the tasks of ``loop`` (an asyncio loop) at every scrape."""
    import asyncio

    LOOP_TASKS.set_function(lambda: len(asyncio.all_tasks(loop)))  # type: ignore[arg-type]

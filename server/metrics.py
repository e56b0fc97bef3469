"""Prometheus metrics of the server (prometheus-client's default registry) and the /metrics
endpoint: loopback unless told otherwise, TLS when gRPC has TLS, the bearer token when gRPC
needs one."""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from bertserve.server.statistics import STATISTICS
from prometheus_client import Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

log = logging.getLogger(__name__)

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


# -- the /metrics endpoint --------------------------------------------------------------------

UNAUTHORIZED = (
    b"send 'authorization: Bearer <token>' with a token this server accepts "
    b"(the same tokens as its gRPC calls)\n"
)


def require_token(app: Callable, allows: Callable[[bytes], bool]) -> Callable:
    """A WSGI app that answers 401 unless ``authorization: Bearer <token>`` is one ``allows``
    accepts (a constant-time comparison, the gRPC interceptor's own)."""

    def guarded(environ: dict, start_response: Callable) -> list[bytes]:
        scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip() or not allows(token.strip().encode()):
            start_response(
                "401 Unauthorized",
                [
                    ("Content-Type", "text/plain; charset=utf-8"),
                    ("WWW-Authenticate", 'Bearer realm="bertserve metrics"'),
                ],
            )
            return [UNAUTHORIZED]
        return app(environ, start_response)

    return guarded


class _QuietHandler(WSGIRequestHandler):
    timeout = 10  # a connection that stalls (no request, no handshake) holds one thread 10 s

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """No access log."""


class MetricsServer(ThreadingWSGIServer):
    """prometheus_client's thread-per-request WSGI server; with an SSL context, the TLS
    handshake runs in each connection's own thread (not in the accepting one, which a client
    that never finishes its handshake would otherwise stall)."""

    ssl_context: ssl.SSLContext | None = None

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.ssl_context is not None:
            request.settimeout(_QuietHandler.timeout)
            request = self.ssl_context.wrap_socket(request, server_side=True)
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # plain HTTP on a TLS port, failed handshakes, resets: the caller's problem, not ours
        log.debug("metrics connection from %s failed", client_address, exc_info=True)


def serve_metrics(
    host: str,
    port: int,
    *,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    tls_client_ca: Path | None = None,
    allows: Callable[[bytes], bool] | None = None,
) -> MetricsServer:
    """Serve /metrics on ``host:port`` in a daemon thread: HTTPS with the gRPC certificate
    when given (and client certificates when gRPC asks for them), a bearer token when
    ``allows`` is given. Returns the server (``server_port``, ``shutdown()``)."""
    import socket

    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]

    class Server(MetricsServer):
        address_family = family

    app = make_wsgi_app()
    if allows is not None:
        app = require_token(app, allows)
    httpd = make_server(host, port, app, Server, handler_class=_QuietHandler)
    if tls_cert is not None and tls_key is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certfile=str(tls_cert), keyfile=str(tls_key))
        if tls_client_ca is not None:
            context.load_verify_locations(cafile=str(tls_client_ca))
            context.verify_mode = ssl.CERT_REQUIRED
        httpd.ssl_context = context
    threading.Thread(target=httpd.serve_forever, name="metrics", daemon=True).start()
    return httpd

"""Server configuration: one frozen ServerConfig per process, from defaults, a YAML file,
``BERTSERVE_*`` environment variables and ``serve`` flags (later sources win), validated once.

Each setting is declared once, as a dataclass field made by :func:`setting`: its YAML key is the
field's name (``batch.<name>`` and ``models.<model>.<name>`` for the batcher's), and the same
declaration yields its environment variable, its flag (see server/cli.py) and its row of the
README's table (``python -m bertserve.server.config --markdown``). Reading them from their
sources: server/config_load.py.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertserve.server.settings import (
    at_least,
    comma_names,
    env_name,
    flag_name,
    optional_port,
    parse_variants,
    setting,
    shown_default,
)

__all__ = [  # the declaration helpers too: server/cli.py reads the flags from here
    "BatchSettings",
    "ServerConfig",
    "env_name",
    "flag_name",
    "parse_variants",
    "settings",
    "shown_default",
]

DEFAULT_PORT = 50051
DEVICES = ("cpu", "cuda")


# Settings that count something (at least 1) or are seconds (at least 0); None: not set.
_BATCH_COUNTS = (
    "max_batch_tokens",
    "max_batch_size",
    "max_queue_requests",
    "max_queue_sequences",
    "max_queue_tokens",
    "length_window",
)
_SERVER_COUNTS = (
    "max_concurrent_rpcs",
    "max_rpcs_per_peer",
    "max_request_bytes",
    "max_request_sequences",
    "max_answer_bytes",
    "stream_buffer_bytes",
    "max_loaded_variants",
)
_SERVER_SECONDS = (
    "grace_period_s",
    "keepalive_min_ping_interval_s",
    "keepalive_time_s",
    "keepalive_timeout_s",
    "max_connection_age_s",
    "max_connection_age_grace_s",
    "stream_idle_timeout_s",
)


@dataclass(frozen=True)
class BatchSettings:
    """Limits of one model's dynamic batcher (YAML ``batch:``, or per model ``models.<name>:``).

    The token budget counts padded cost (longest sequence x count) because onnxruntime
    computes the padding too.
    """

    max_batch_tokens: int = setting(
        8192, "padded tokens per batch (longest x count)", group="batch"
    )
    max_batch_size: int = setting(64, "sequences per batch", group="batch")
    max_queue_delay_ms: float = setting(
        2.0, "longest wait (ms) to fill a batch", group="batch", shown="2"
    )
    # Bounded queue: requests, sequences and tokens waiting beyond these are refused with
    # RESOURCE_EXHAUSTED, so memory and waiting time stay bounded under load; a single
    # request larger than the queue is INVALID_ARGUMENT.
    max_queue_requests: int = setting(
        1024, "waiting requests before RESOURCE_EXHAUSTED", group="batch"
    )
    max_queue_sequences: int = setting(
        32768, "waiting sequences before RESOURCE_EXHAUSTED", group="batch"
    )
    max_queue_tokens: int = setting(
        1 << 20, "waiting tokens before RESOURCE_EXHAUSTED", group="batch"
    )
    # How many waiting sequences the batcher weighs when it cuts the next batch: every
    # waiting request gets its share, shortest sequences first.
    length_window: int = setting(256, "waiting sequences weighed for the next batch", group="batch")

    def validate(self, where: str) -> None:
        at_least(self, 1, _BATCH_COUNTS, f"{where}.")
        at_least(self, 0, ("max_queue_delay_ms",), f"{where}.")


@dataclass(frozen=True)
class ServerConfig:
    """Everything one server process needs; built by :func:`load_config` or directly in tests."""

    repo: Path = setting(help="model repository: <model>/<variant>/manifest.json", kind=Path)
    host: str = setting("127.0.0.1", "address gRPC listens on")
    port: int = setting(DEFAULT_PORT, "gRPC port (0: any free port)")
    metrics_port: int | None = setting(
        None,
        "Prometheus /metrics port (0: any free port; -1: off)",
        convert=optional_port,
        shown="off",
    )
    # loopback unless told otherwise: the metrics tell request rates and model names
    metrics_host: str = setting("127.0.0.1", "address the /metrics endpoint listens on")
    device: str = setting("cpu", "execution device", choices=DEVICES)
    # Never "the first by name": adding a model must not change who answers (server/defaults.py).
    default_model: str | None = setting(
        None, "model for requests naming none", kind=str, shown="the only model; else refused"
    )
    # Variant per model name; models not listed get fp32-opt (else fp32) on CPU, fp16 on CUDA.
    variants: Mapping[str, str] = setting(
        help="a model's default variant, MODEL=VARIANT (repeatable; YAML: a mapping)",
        convert=parse_variants,
        flag="--variant",
        append=True,
        factory=dict,
        shown="fp32-opt on CPU, fp16 on CUDA; int8 only when named here or by a request",
    )
    intra_op_threads: int = setting(
        0, "threads per onnxruntime session", shown="0: the CPUs this process may use / instances"
    )
    instances: int = setting(1, "onnxruntime sessions per variant, run side by side")
    spin_wait: bool = setting(
        False,
        "onnxruntime's threads busy-wait for work after a run: on only where the model has "
        "cores of its own; off, they sleep and leave the cores to the event loop and the "
        "callers (lower p99, more concurrent throughput)",
    )
    grace_period_s: float = setting(10.0, "seconds to finish in-flight work on SIGTERM")
    warmup: bool = setting(True, "warm up each variant and measure its batch cost at load")
    batch: BatchSettings = field(default_factory=BatchSettings)
    models: Mapping[str, BatchSettings] = field(default_factory=dict)  # per-model overrides
    port_file: Path | None = setting(None, "write the bound port here once serving", kind=Path)
    log_level: str = setting("INFO", "DEBUG, INFO, WARNING, ERROR")
    log_json: bool = setting(True, "log one JSON object a line")
    # -- security (server/security.py) --
    tls_cert: Path | None = setting(
        None, "PEM certificate chain: serve TLS (with tls_key)", kind=Path, group="security"
    )
    tls_key: Path | None = setting(None, "PEM private key of tls_cert", kind=Path, group="security")
    tls_client_ca: Path | None = setting(
        None,
        "PEM CA: mutual TLS, clients need a certificate it signed",
        kind=Path,
        group="security",
    )
    auth_token_file: Path | None = setting(
        None,
        "bearer tokens, one a line, reloaded on SIGHUP (gRPC and /metrics)",
        kind=Path,
        group="security",
    )
    # -- limits (server/limits.py) --
    # BertService RPCs in flight at once; beyond it RESOURCE_EXHAUSTED before any work is done.
    max_concurrent_rpcs: int = setting(1024, "calls served at once", group="limits")
    # One connection's share, so a single caller cannot take every slot.
    max_rpcs_per_peer: int | None = setting(
        None,
        "calls one connection may have in flight (its unary calls may borrow spare slots)",
        kind=int,
        group="limits",
        shown="max_concurrent_rpcs/4, at least min(max_concurrent_rpcs, 16)",
    )
    # Slots streams can never take: unary calls are served while streams hold the rest.
    unary_reserved_rpcs: int | None = setting(
        None,
        "slots of max_concurrent_rpcs kept for unary calls (streams never take them)",
        kind=int,
        group="limits",
        shown="max_concurrent_rpcs/8",
    )
    stream_idle_timeout_s: float = setting(
        60.0,
        "seconds a stream may go without a request or an answer before it is closed "
        "(DEADLINE_EXCEEDED; 0: never)",
        group="limits",
    )
    # The largest request message; the client sends up to 16 MiB, so the two agree.
    max_request_bytes: int = setting(
        16 * 1024 * 1024, "largest request message", group="limits", shown="16777216 (16 MiB)"
    )
    # texts or token sequences in one request; above the batcher's max_queue_sequences, so
    # for Embed and Classify the queue's own bound (and message) comes first
    max_request_sequences: int = setting(
        65536, "texts or token sequences per request (Tokenize too)", group="limits"
    )
    # One EmbedStream answer (all its chunks); bigger ones are refused before computing.
    max_answer_bytes: int = setting(
        16 * 1024 * 1024,
        "largest answer; bigger ones are refused before computing",
        group="limits",
        shown="16777216 (16 MiB)",
    )
    # Computed-but-unsent answer bytes one EmbedStream may hold: a caller that stops reading
    # costs at most this much memory, and its stream stops computing until it reads again.
    stream_buffer_bytes: int = setting(
        32 * 1024 * 1024,
        "computed-but-unsent answer bytes one stream may hold",
        group="limits",
        shown="33554432 (32 MiB)",
    )
    # -- connections --
    # The client pings every 30 s: accept pings up to every 10 s, on idle streams too.
    keepalive_min_ping_interval_s: float = setting(
        10.0, "seconds: accept client pings this often", group="connections"
    )
    # The server pings idle connections to find callers that vanished without closing.
    keepalive_time_s: float = setting(
        60.0, "seconds between the server's pings on idle connections", group="connections"
    )
    keepalive_timeout_s: float = setting(
        20.0, "seconds to wait for a ping's answer before closing", group="connections"
    )
    # After this age a connection is asked to go away (GOAWAY) so clients rebalance onto new
    # replicas; calls still running get the grace period to finish. 0: no maximum.
    max_connection_age_s: float = setting(
        300.0,
        "seconds before a connection is asked to go away, to rebalance (0: never)",
        group="connections",
    )
    max_connection_age_grace_s: float = setting(
        60.0, "seconds calls get to finish after that", group="connections"
    )
    # -- variants --
    allowed_variants: tuple[str, ...] = setting(
        (), "variants callers may ask for, comma-separated", convert=comma_names, shown="every one"
    )
    max_loaded_variants: int = setting(
        4, "variants loaded at once; on-demand loads stop there (defaults always load)"
    )
    verify_checksums: bool = setting(True, "check manifest sha256s before loading a package")

    def batch_settings(self, model: str) -> BatchSettings:
        return self.models.get(model, self.batch)

    @property
    def peer_limit(self) -> int:
        """Calls one connection may have in flight."""
        if self.max_rpcs_per_peer is not None:
            return self.max_rpcs_per_peer
        total = self.max_concurrent_rpcs
        return max(total // 4, min(total, 16))

    @property
    def stream_limit(self) -> int:
        """Streams in flight at once: every slot but the unary reserve."""
        reserved = self.unary_reserved_rpcs
        return self.max_concurrent_rpcs - (
            self.max_concurrent_rpcs // 8 if reserved is None else reserved
        )

    def validate(self) -> ServerConfig:
        """Raise ValueError naming the first bad setting; returns self."""
        if not Path(self.repo).is_dir():
            raise ValueError(f"repo={str(self.repo)!r}: not a directory")
        if self.device not in DEVICES:
            raise ValueError(f"device={self.device!r}: allowed {', '.join(DEVICES)}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port={self.port!r}: allowed 0..65535 (0: any free port)")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics_port={self.metrics_port!r}: allowed 0..65535")
        if self.intra_op_threads < 0 or self.instances < 1:
            raise ValueError("intra_op_threads must be >= 0 and instances >= 1")
        at_least(self, 1, _SERVER_COUNTS)
        if self.unary_reserved_rpcs is not None and not (
            0 <= self.unary_reserved_rpcs < self.max_concurrent_rpcs
        ):
            raise ValueError(
                f"unary_reserved_rpcs={self.unary_reserved_rpcs!r}: allowed 0.."
                f"{self.max_concurrent_rpcs - 1} (under max_concurrent_rpcs: streams keep a slot)"
            )
        if self.max_answer_bytes > self.stream_buffer_bytes:
            raise ValueError(
                f"max_answer_bytes={self.max_answer_bytes}: over stream_buffer_bytes="
                f"{self.stream_buffer_bytes}; one answer must fit in a stream's buffer"
            )
        at_least(self, 0, _SERVER_SECONDS)
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key: give both (TLS) or neither (plaintext)")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca: mutual TLS needs tls_cert and tls_key too")
        for name in ("tls_cert", "tls_key", "tls_client_ca", "auth_token_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name}={str(path)!r}: no such file")
        self.batch.validate("batch")
        for name, settings in self.models.items():
            settings.validate(f"models.{name}")
        return self


def settings() -> Iterator[dataclasses.Field]:
    """Every setting field: ServerConfig's, then BatchSettings' (YAML ``batch.<name>``)."""
    for cls in (ServerConfig, BatchSettings):
        yield from (f for f in dataclasses.fields(cls) if "setting" in f.metadata)


BATCH_KEYS = frozenset(f.name for f in dataclasses.fields(BatchSettings))


def __getattr__(name: str) -> Any:
    """``load_config`` and ``markdown_table`` live in server/config_load.py (they read the
    declarations above); importing them from here still works."""
    if name in ("load_config", "markdown_table"):
        from bertserve.server import config_load

        return getattr(config_load, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    from bertserve.server.config_load import markdown_table

    if sys.argv[1:] != ["--markdown"]:
        sys.exit("usage: python -m bertserve.server.config --markdown")
    sys.stdout.write(markdown_table())

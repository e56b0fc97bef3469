"""Server configuration: one frozen ServerConfig per process, from defaults, a YAML file,
``BERTSERVE_*`` environment variables and command-line flags (later sources win), validated once."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_PORT = 50051
DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class BatchSettings:
    """Limits of one model's dynamic batcher.

    The token budget counts padded cost (longest sequence x count) because onnxruntime
    computes the padding too.
    """

    max_batch_tokens: int = 8192
    max_batch_size: int = 64
    max_queue_delay_ms: float = 2.0
    # Bounded queue: requests, sequences and tokens waiting beyond these are refused with
    # RESOURCE_EXHAUSTED, so memory and waiting time stay bounded under load; a single
    # request larger than the queue is INVALID_ARGUMENT.
    max_queue_requests: int = 1024
    max_queue_sequences: int = 32768
    max_queue_tokens: int = 1 << 20
    # How many waiting sequences the batcher weighs when it cuts the next batch: every
    # waiting request gets its share, shortest sequences first.
    length_window: int = 256

    def validate(self, where: str) -> None:
        for name in (
            "max_batch_tokens",
            "max_batch_size",
            "max_queue_requests",
            "max_queue_sequences",
            "max_queue_tokens",
            "length_window",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{where}.{name}={getattr(self, name)!r}: must be at least 1")
        if self.max_queue_delay_ms < 0:
            raise ValueError(
                f"{where}.max_queue_delay_ms={self.max_queue_delay_ms!r}: must be >= 0"
            )


@dataclass(frozen=True)
class ServerConfig:
    """Everything one server process needs; built by :func:`load_config` or directly in tests."""

    repo: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT  # 0: any free port
    metrics_port: int | None = None  # None: no metrics endpoint; 0: any free port
    device: str = "cpu"
    default_model: str | None = None  # None: the first model by name
    # Variant per model name; models not listed get fp32-opt (else fp32) on CPU, fp16 on CUDA.
    variants: Mapping[str, str] = field(default_factory=dict)
    intra_op_threads: int = 0  # 0: the CPUs this process may use, shared among instances
    instances: int = 1  # onnxruntime sessions per variant, run side by side
    grace_period_s: float = 10.0
    warmup: bool = True
    batch: BatchSettings = field(default_factory=BatchSettings)
    models: Mapping[str, BatchSettings] = field(default_factory=dict)  # per-model overrides
    port_file: Path | None = None
    log_level: str = "INFO"
    log_json: bool = True
    # -- security (server/security.py) --
    tls_cert: Path | None = None  # PEM certificate chain; with tls_key: TLS
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # PEM CA: clients must present a certificate it signed
    auth_token_file: Path | None = None  # one bearer token a line; reloaded on SIGHUP
    # -- limits (server/limits.py) --
    # BertService RPCs in flight at once; beyond it RESOURCE_EXHAUSTED before any work is done.
    max_concurrent_rpcs: int = 1024  # as many as one batcher queues (max_queue_requests)
    # The largest request message; the client sends up to 16 MiB, so the two agree.
    max_request_bytes: int = 16 * 1024 * 1024
    # texts or token sequences in one request; above the batcher's max_queue_sequences, so
    # for Embed and Classify the queue's own bound (and message) comes first
    max_request_sequences: int = 65536
    # One EmbedStream answer (all its chunks); bigger ones are refused before computing.
    max_answer_bytes: int = 16 * 1024 * 1024
    # Computed-but-unsent answer bytes one EmbedStream may hold: a caller that stops reading
    # costs at most this much memory, and its stream stops computing until it reads again.
    stream_buffer_bytes: int = 32 * 1024 * 1024
    # -- connections --
    # The client pings every 30 s: accept pings up to every 10 s, on idle streams too.
    keepalive_min_ping_interval_s: float = 10.0
    # The server pings idle connections to find callers that vanished without closing.
    keepalive_time_s: float = 60.0
    keepalive_timeout_s: float = 20.0
    # After this age a connection is asked to go away (GOAWAY) so clients rebalance onto new
    # replicas; calls still running get the grace period to finish. 0: no maximum.
    max_connection_age_s: float = 300.0
    max_connection_age_grace_s: float = 60.0
    # -- variants --
    allowed_variants: tuple[str, ...] = ()  # variants callers may ask for; empty: every one
    max_loaded_variants: int = 4  # on-demand loads stop here (defaults always load)
    verify_checksums: bool = True  # check manifest sha256s before loading a package

    def batch_settings(self, model: str) -> BatchSettings:
        return self.models.get(model, self.batch)

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
        if self.grace_period_s < 0:
            raise ValueError(f"grace_period_s={self.grace_period_s!r}: must be >= 0")
        for name in (
            "max_concurrent_rpcs",
            "max_request_bytes",
            "max_request_sequences",
            "max_answer_bytes",
            "stream_buffer_bytes",
            "max_loaded_variants",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r}: must be at least 1")
        if self.max_answer_bytes > self.stream_buffer_bytes:
            raise ValueError(
                f"max_answer_bytes={self.max_answer_bytes}: over stream_buffer_bytes="
                f"{self.stream_buffer_bytes}; one answer must fit in a stream's buffer"
            )
        for name in (
            "keepalive_min_ping_interval_s",
            "keepalive_time_s",
            "keepalive_timeout_s",
            "max_connection_age_s",
            "max_connection_age_grace_s",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)!r}: must be >= 0")
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


def _batch_from(data: Mapping[str, Any], base: BatchSettings, where: str) -> BatchSettings:
    known = {f.name for f in dataclasses.fields(BatchSettings)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; allowed {sorted(known)}")
    return dataclasses.replace(base, **data)


def _names(raw: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in raw.split(",") if name.strip())


def parse_variants(pairs: list[str]) -> dict[str, str]:
    """``["minilm=int8", ...]`` -> ``{"minilm": "int8"}``; ValueError naming a bad pair."""
    variants = {}
    for pair in ",".join(pairs).split(","):
        model, _, variant = pair.strip().partition("=")
        if not model or not variant:
            raise ValueError(f"--variant {pair!r}: expected MODEL=VARIANT, e.g. minilm=int8")
        variants[model] = variant
    return variants


def _env(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    converters = {
        "REPO": ("repo", Path),
        "HOST": ("host", str),
        "PORT": ("port", int),
        "METRICS_PORT": ("metrics_port", int),
        "DEVICE": ("device", str),
        "DEFAULT_MODEL": ("default_model", str),
        "INTRA_OP_THREADS": ("intra_op_threads", int),
        "INSTANCES": ("instances", int),
        "GRACE_PERIOD": ("grace_period_s", float),
        "LOG_LEVEL": ("log_level", str),
        "TLS_CERT": ("tls_cert", Path),
        "TLS_KEY": ("tls_key", Path),
        "TLS_CLIENT_CA": ("tls_client_ca", Path),
        "AUTH_TOKEN_FILE": ("auth_token_file", Path),
        "MAX_CONCURRENT_RPCS": ("max_concurrent_rpcs", int),
        "MAX_REQUEST_BYTES": ("max_request_bytes", int),
        "MAX_ANSWER_BYTES": ("max_answer_bytes", int),
        "STREAM_BUFFER_BYTES": ("stream_buffer_bytes", int),
        "MAX_CONNECTION_AGE": ("max_connection_age_s", float),
        "ALLOWED_VARIANTS": ("allowed_variants", _names),
        "MAX_LOADED_VARIANTS": ("max_loaded_variants", int),
    }
    raw = environ.get("BERTSERVE_VARIANTS")
    if raw:
        values["variants"] = parse_variants([raw])
    for suffix, (name, convert) in converters.items():
        raw = environ.get(f"BERTSERVE_{suffix}")
        if raw:
            try:
                values[name] = convert(raw)
            except ValueError:
                raise ValueError(f"BERTSERVE_{suffix}={raw!r}: not a valid {name}") from None
    return values


def load_config(
    flags: Mapping[str, Any] | None = None,
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> ServerConfig:
    """Merge defaults < YAML file < ``BERTSERVE_*`` environment < flags (None: not given).

    The YAML file holds ServerConfig's fields; ``batch`` and ``models.<name>`` hold
    BatchSettings fields.
    """
    values: dict[str, Any] = {}
    batch = BatchSettings()
    models: dict[str, BatchSettings] = {}
    if config_file:
        import yaml

        data = yaml.safe_load(Path(config_file).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{config_file}: expected a mapping at the top level")
        batch = _batch_from(data.pop("batch", None) or {}, batch, "batch")
        for name, settings in (data.pop("models", None) or {}).items():
            models[name] = _batch_from(settings or {}, batch, f"models.{name}")
        known = {f.name for f in dataclasses.fields(ServerConfig)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"{config_file}: unknown keys {sorted(unknown)}; allowed {sorted(known)}"
            )
        values.update(data)
    values.update(_env(os.environ if environ is None else environ))
    values.update({k: v for k, v in (flags or {}).items() if v is not None})
    if isinstance(values.get("variants"), list):  # --variant MODEL=VARIANT, repeated
        values["variants"] = parse_variants(values["variants"])
    if "repo" not in values:
        raise ValueError("no model repository: pass --repo DIR or set BERTSERVE_REPO")
    values["repo"] = Path(values["repo"])
    for name in ("port_file", "tls_cert", "tls_key", "tls_client_ca", "auth_token_file"):
        if values.get(name) is not None:
            values[name] = Path(values[name])
    if isinstance(values.get("allowed_variants"), str):
        values["allowed_variants"] = _names(values["allowed_variants"])
    if values.get("allowed_variants") is not None:
        values["allowed_variants"] = tuple(values["allowed_variants"])
    if values.get("metrics_port", 0) is not None and values.get("metrics_port", 0) < 0:
        values["metrics_port"] = None  # -1: no metrics endpoint
    return ServerConfig(batch=batch, models=models, **values).validate()

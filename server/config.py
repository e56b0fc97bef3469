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
    if values.get("port_file") is not None:
        values["port_file"] = Path(values["port_file"])
    if values.get("metrics_port", 0) is not None and values.get("metrics_port", 0) < 0:
        values["metrics_port"] = None  # -1: no metrics endpoint
    return ServerConfig(batch=batch, models=models, **values).validate()

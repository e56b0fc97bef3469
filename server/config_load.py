"""Reading the settings server/config.py declares from their sources: defaults < a YAML file <
``BERTSERVE_*`` environment variables < ``serve`` flags; and the README's table of them."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bertserve.server.config import BATCH_KEYS, BatchSettings, ServerConfig, settings
from bertserve.server.settings import convert_value, env_name, flag_name, from_mapping
from bertserve.server.settings import markdown_table as settings_table


def load_config(
    flags: Mapping[str, Any] | None = None,
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> ServerConfig:
    """Merge defaults < YAML file < ``BERTSERVE_*`` environment < flags (None: not given).

    ``flags`` is keyed by setting name (ServerConfig's and BatchSettings'). The YAML file holds
    ServerConfig's settings; ``batch`` and ``models.<name>`` hold BatchSettings'. Flags and
    environment set the global ``batch`` only: a model's own ``models:`` keys stay its own,
    and its other keys follow the global ones.
    """
    server_fields = {f.name: f for f in settings() if f.name not in BATCH_KEYS}
    batch_fields = {f.name: f for f in settings() if f.name in BATCH_KEYS}
    every = {**server_fields, **batch_fields}
    values: dict[str, Any] = {}
    batch: dict[str, Any] = {}
    model_keys: dict[str, dict[str, Any]] = {}
    if config_file:
        import yaml

        data = yaml.safe_load(Path(config_file).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{config_file}: expected a mapping at the top level")
        batch.update(from_mapping(data.pop("batch", None) or {}, batch_fields, "batch"))
        models = data.pop("models", None) or {}
        if not isinstance(models, Mapping):
            raise ValueError(f"{config_file}: models: expected a mapping of model names")
        for name, keys in models.items():
            model_keys[str(name)] = from_mapping(keys or {}, batch_fields, f"models.{name}")
        try:
            values.update(from_mapping(data, server_fields, "top level"))
        except ValueError as error:
            known = sorted(server_fields) + ["batch", "models"]
            if "unknown keys" in str(error):
                unknown = sorted(set(data) - set(server_fields))
                raise ValueError(
                    f"{config_file}: unknown keys {unknown}; allowed {sorted(known)}"
                ) from None
            raise
    environ = os.environ if environ is None else environ
    for name, field_ in every.items():
        variable = env_name(field_)
        raw = environ.get(variable) if variable else None
        if raw:
            (batch if name in BATCH_KEYS else values)[name] = convert_value(field_, raw, variable)
    for name, value in (flags or {}).items():
        if name not in every:
            raise ValueError(f"unknown setting {name!r}; allowed {sorted(every)}")
        if value is not None:
            where = flag_name(every[name]) or name
            (batch if name in BATCH_KEYS else values)[name] = convert_value(
                every[name], value, where
            )
    if values.get("repo") is None:
        raise ValueError("no model repository: pass --repo DIR or set BERTSERVE_REPO")
    base = BatchSettings(**batch)
    models = {name: dataclasses.replace(base, **keys) for name, keys in model_keys.items()}
    return ServerConfig(batch=base, models=models, **values).validate()


def markdown_table() -> str:
    """The README's table of settings: YAML key, flag, environment variable, default, meaning."""
    rows = ((f"batch.{f.name}" if f.name in BATCH_KEYS else f.name, f) for f in settings())
    return settings_table(
        rows,
        "| `models.<name>.<batch key>` | — | — | the `batch` value | one model's own batcher "
        "settings; global flags and variables never override them |",
    )

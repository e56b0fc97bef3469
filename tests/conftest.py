"""Shared fixtures: real model exports, made once per test run and cached on disk.

The cache key covers the export code and the library versions, so a changed
exporter re-exports; a fresh clone (CI) exports exactly once per run.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "test-models"

# What the shared test repository holds: (model argument, --config, name, variants).
MINILM_VARIANTS = ("fp32", "fp32-opt", "int8")


def _export_key() -> str:
    digest = hashlib.sha256()
    for path in sorted((ROOT / "export").glob("*.py")):
        digest.update(path.read_bytes())
    for dist in ("torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime"):
        digest.update(f"{dist}={importlib.metadata.version(dist)}".encode())
    return digest.hexdigest()[:16]


def _exported(repo: Path, name: str, variants: tuple[str, ...], **kwargs: object) -> Path:
    from bertserve.export import export_model

    missing = [v for v in variants if not (repo / name / v / "manifest.json").is_file()]
    if missing:
        export_model(repo=repo, name=name, variants=missing, progress=False, **kwargs)
    return repo


@pytest.fixture(scope="session")
def model_repo() -> Path:
    """A model repository with the bundled all-MiniLM-L6-v2 (fp32, fp32-opt, int8)."""
    repo = CACHE / _export_key()
    return _exported(repo, "minilm", MINILM_VARIANTS, model="minilm")


@pytest.fixture(scope="session")
def minilm_dir(model_repo: Path) -> Path:
    """The folder of the bundled PyTorch checkpoint (needs the [export] extra)."""
    from bertserve.export.sources import minilm_path

    return minilm_path()


@pytest.fixture(scope="session")
def live_server(model_repo: Path):
    """A ``bertserve serve`` subprocess on the model repository: ``.target`` ("127.0.0.1:PORT"),
    ``.metrics_url``, ``.repo``, ``.process``; stopped with SIGTERM at the end. It answers with
    fp32-opt by default (not whatever runs fastest here), so answers compare with that model."""
    from servers import start_server

    server = start_server(model_repo, "--variant", "minilm=fp32-opt")
    yield server
    server.stop()

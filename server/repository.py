"""The model repository on disk: ``<repo>/<model>/<variant>/`` with model.onnx, manifest.json
and the tokenizer files."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VARIANT_ORDER = ("fp32", "fp32-opt", "int8", "fp16")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VariantPackage:
    """One exported variant of a model: its folder and manifest."""

    name: str
    path: Path
    manifest: dict[str, Any]

    @property
    def precision(self) -> str:
        return str(self.manifest.get("precision") or self.name.split("-")[0])

    @property
    def size_bytes(self) -> int:
        model = self.path / "model.onnx"
        extra = sum(p.stat().st_size for p in self.path.glob("model.onnx*data"))
        return (model.stat().st_size if model.is_file() else 0) + extra


@dataclass(frozen=True)
class ModelPackage:
    """A model name and its variants; shape facts come from the manifests."""

    name: str
    variants: dict[str, VariantPackage] = field(default_factory=dict)

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest of the first variant (every variant shares the shape facts)."""
        return next(iter(self.variants.values())).manifest

    def default_variant(self, device: str) -> str:
        """fp16 on CUDA; fp32-opt, else fp32, on CPU; else whatever exists."""
        preferred = ("fp16", "fp32-opt", "fp32") if device == "cuda" else ("fp32-opt", "fp32")
        for name in preferred:
            if name in self.variants:
                return name
        return next(iter(self.variants))


def _read_manifest(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a manifest must be a JSON object")
    return data


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        for block in iter(lambda: data.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_package(package: VariantPackage) -> None:
    """Check every file against the manifest's sizes and sha256 checksums; ValueError naming
    each missing, truncated or altered file. A manifest without a file table passes."""
    problems = []
    for name, entry in (package.manifest.get("files") or {}).items():
        path = package.path / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif "bytes" in entry and path.stat().st_size != int(entry["bytes"]):
            problems.append(
                f"{name} has {path.stat().st_size:,} bytes, the manifest says "
                f"{int(entry['bytes']):,} (truncated or half-written?)"
            )
        elif "sha256" in entry and _sha256(path) != entry["sha256"]:
            problems.append(f"{name} does not match its sha256 checksum (altered or corrupt)")
    if problems:
        raise ValueError(
            f"package {package.path} is damaged: {'; '.join(problems)}; export it again "
            "(bertserve export) or restore it from a good copy"
        )


def scan_repository(
    repo: Path, broken: dict[tuple[str, str], str] | None = None
) -> dict[str, ModelPackage]:
    """Every model with at least one variant that has a manifest and a model.onnx, by name.

    Folders whose name starts with "." are unfinished atomic writes and are skipped. A
    variant whose manifest cannot be read is left out and, when ``broken`` is given, recorded
    there as (model, variant) -> why.
    """
    repo = Path(repo)
    if not repo.is_dir():
        raise FileNotFoundError(f"model repository {repo} does not exist")
    models: dict[str, ModelPackage] = {}
    for model_dir in sorted(p for p in repo.iterdir() if p.is_dir()):
        if model_dir.name.startswith("."):
            continue
        variants: dict[str, VariantPackage] = {}
        found = [p for p in model_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
        order = {name: i for i, name in enumerate(VARIANT_ORDER)}
        for variant_dir in sorted(found, key=lambda p: (order.get(p.name, 99), p.name)):
            manifest_path = variant_dir / "manifest.json"
            if not (manifest_path.is_file() and (variant_dir / "model.onnx").is_file()):
                continue
            try:
                manifest = _read_manifest(manifest_path)
            except (ValueError, OSError) as error:  # JSONDecodeError is a ValueError
                reason = f"{manifest_path} cannot be read: {error}"
                log.error("model package refused: %s", reason)
                if broken is not None:
                    broken[(model_dir.name, variant_dir.name)] = reason
                continue
            variants[variant_dir.name] = VariantPackage(variant_dir.name, variant_dir, manifest)
        if variants:
            models[model_dir.name] = ModelPackage(model_dir.name, variants)
    return models

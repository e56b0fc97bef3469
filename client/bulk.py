"""Bulk embedding: a text file in, a .npy or .parquet of sentence vectors out.

Streams the file through EmbedStream, shows progress on stderr, and can be
stopped and run again: rows already done are kept in ``<output>.partial`` with
a ``<output>.progress.json`` sidecar, and the output appears only when complete
(written to a temporary file, then renamed into place).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

PYARROW_HINT = "writing .parquet needs pyarrow: pip install pyarrow (or write .npy)"
OUTPUT_SUFFIXES = (".npy", ".parquet")


@dataclass(frozen=True)
class BulkJob:
    """What a bulk run computes; a rerun resumes only when all of it matches."""

    input: str
    input_bytes: int
    input_mtime_ns: int
    field: str
    options: dict[str, Any]

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


def read_texts(path: Path, field: str = "text") -> Iterator[str]:
    """One text per line of a .txt file, or per JSON line (a string or an object's ``field``)."""
    jsonl = path.suffix.lower() in (".jsonl", ".ndjson")
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            line = line.rstrip("\r\n")
            if not jsonl:
                yield line
                continue
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON: {exc.msg}") from None
            if isinstance(item, dict):
                if field not in item or not isinstance(item[field], str):
                    raise ValueError(f"{path}:{number}: no string field {field!r} (see --field)")
                item = item[field]
            if not isinstance(item, str):
                raise ValueError(f"{path}:{number}: expected a string or an object with {field!r}")
            yield item


def count_texts(path: Path, field: str = "text") -> int:
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return sum(1 for _ in read_texts(path, field))
    with path.open("rb") as data:
        count = sum(chunk.count(b"\n") for chunk in iter(lambda: data.read(1 << 20), b""))
        data.seek(max(0, data.tell() - 1))
        ends_open = data.tell() > 0 and data.read(1) != b"\n"
    return count + int(ends_open)


class Progress:
    """A one-line progress bar on stderr: rows, rows/s and ETA."""

    def __init__(self, total: int, done: int = 0, stream: IO[str] | None = None) -> None:
        self.total, self.done, self.start_done = total, done, done
        self.stream = stream or sys.stderr
        self.started = self.last = time.monotonic()

    def update(self, rows: int, *, final: bool = False) -> None:
        self.done += rows
        now = time.monotonic()
        if not final and now - self.last < 0.5:
            return
        self.last = now
        rate = (self.done - self.start_done) / max(now - self.started, 1e-9)
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        eta = "--" if left == float("inf") else _duration(left)
        percent = 100 * self.done / self.total if self.total else 100.0
        self.stream.write(
            f"\r{self.done:,}/{self.total:,} rows ({percent:5.1f}%)  {rate:,.0f} rows/s  "
            f"ETA {eta}   " + ("\n" if final else "")
        )
        self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def embed_file(
    client: Any,
    input_path: Path,
    output_path: Path,
    *,
    field: str = "text",
    batch_size: int = 32,
    window: int = 8,
    progress: bool = True,
    **options: Any,
) -> int:
    """Embed every text of ``input_path`` into ``output_path`` (rows in input order).

    ``options`` go to ``Client.embed_stream`` and must give one sentence vector per
    text. Returns the number of rows written.
    """
    suffix = output_path.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise ValueError(f"output {output_path}: use a .npy or .parquet file")
    if suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ModuleNotFoundError:
            raise ModuleNotFoundError(PYARROW_HINT, name="pyarrow") from None
    if batch_size < 1:
        raise ValueError("batch size must be at least 1")
    stat = input_path.stat()
    job = BulkJob(str(input_path.resolve()), stat.st_size, stat.st_mtime_ns, field, options)
    partial = output_path.with_name(output_path.name + ".partial")
    sidecar = output_path.with_name(output_path.name + ".progress.json")
    total = count_texts(input_path, field)
    done, width = _resume(job, partial, sidecar)
    bar = Progress(total, done) if progress else None

    def batches() -> Iterator[list[str]]:
        batch: list[str] = []
        for index, text in enumerate(read_texts(input_path, field)):
            if index < done:
                continue
            batch.append(text)
            if len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    with partial.open("ab") as rows:
        for result in client.embed_stream(batches(), window=window, **options):
            vectors = result.sentence_embedding
            if vectors is None or vectors.ndim != 2:
                raise ValueError("bulk embedding needs one sentence vector per text")
            vectors = np.ascontiguousarray(vectors, dtype=np.float32)
            if width is None:
                width = vectors.shape[1]
            rows.write(vectors.tobytes())
            rows.flush()
            os.fsync(rows.fileno())
            done += len(vectors)
            # The sidecar is renamed into place after the rows are on disk: it never
            # claims rows the partial file lacks.
            _write_json(sidecar, {"job": job.key(), "rows": done, "width": width})
            if bar:
                bar.update(len(vectors))
    if bar:
        bar.update(0, final=True)
    if done != total:
        raise RuntimeError(f"embedded {done} rows but the input has {total}")
    _finish(partial, output_path, done, width or 0)
    sidecar.unlink(missing_ok=True)
    partial.unlink(missing_ok=True)
    return done


def _resume(job: BulkJob, partial: Path, sidecar: Path) -> tuple[int, int | None]:
    """Rows already embedded by an earlier run of this same job (and the vector width)."""
    if sidecar.is_file() and partial.is_file():
        state = json.loads(sidecar.read_text())
        if state.get("job") == job.key():
            rows, width = int(state["rows"]), int(state["width"])
            # Rows appended after the sidecar's last update are dropped and recomputed.
            with partial.open("r+b") as data:
                data.truncate(rows * width * 4)
            return rows, width
        print(f"{sidecar.name}: a different input or options: starting over", file=sys.stderr)
    partial.unlink(missing_ok=True)
    sidecar.unlink(missing_ok=True)
    return 0, None


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _finish(partial: Path, output: Path, rows: int, width: int) -> None:
    """Turn the raw rows into the output file, atomically."""
    tmp = output.with_name(f".{output.name}.tmp")
    vectors = np.memmap(partial, dtype=np.float32, mode="r", shape=(rows, width)) if rows else None
    if vectors is None:
        vectors = np.zeros((0, width), dtype=np.float32)
    if output.suffix.lower() == ".npy":
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(rows, width))
        step = 65536
        for start in range(0, rows, step):
            out[start : start + step] = vectors[start : start + step]
        out.flush()
        del out
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        flat = pa.array(np.asarray(vectors).reshape(-1), type=pa.float32())
        table = pa.table(
            {
                "row": pa.array(np.arange(rows, dtype=np.int64)),
                "embedding": pa.FixedSizeListArray.from_arrays(flat, width),
            }
        )
        pq.write_table(table, tmp)
    os.replace(tmp, output)

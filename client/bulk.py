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
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import resume
from .long_text import DEFAULTS as LONG_DEFAULTS
from .progress import Progress, wanted
from .request import EmbedOptions
from .resume import BulkError

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


ERRORS = ("fail", "skip")


def read_texts(path: Path, field: str = "text", errors: str = "fail") -> Iterator[str | None]:
    """One text per line of a .txt file, or per JSON line (a string or an object's ``field``).

    Lines end at ``\n`` only (a ``\r\n`` ending is dropped, a lone ``\r`` is part of the
    text), so the count of texts is the count of ``\n`` of :func:`count_texts`. A .txt file's
    blank line is a text (an empty one); blank lines of .jsonl files are skipped. A line that
    is not UTF-8 raises ``BulkError`` naming the line and the byte offset, or with
    ``errors="skip"`` is yielded as None (its row will be NaN, like a blank text's).
    """
    if errors not in ERRORS:
        raise ValueError(f"errors={errors!r}: use one of {', '.join(ERRORS)}")
    jsonl = path.suffix.lower() in (".jsonl", ".ndjson")
    offset = 0
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, 1):
            start, offset = offset, offset + len(raw)
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                if errors == "skip":
                    yield None
                    continue
                raise BulkError(
                    f"{path}:{number}: not UTF-8 at byte {start + exc.start} of the file "
                    f"(0x{raw[exc.start]:02x}); fix the line, or pass --errors skip to give it "
                    "a row of NaN"
                ) from None
            if not jsonl:
                yield line
                continue
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BulkError(f"{path}:{number}: not JSON: {exc.msg}") from None
            if isinstance(item, dict):
                if field not in item or not isinstance(item[field], str):
                    raise BulkError(f"{path}:{number}: no string field {field!r} (see --field)")
                item = item[field]
            if not isinstance(item, str):
                raise BulkError(f"{path}:{number}: expected a string or an object with {field!r}")
            yield item


def count_texts(path: Path, field: str = "text", errors: str = "fail") -> int:
    """How many texts :func:`read_texts` yields. A .txt file is decoded only with
    ``errors="fail"``, so that a bad line is found before any work, not hours into it."""
    if errors == "fail" or path.suffix.lower() in (".jsonl", ".ndjson"):
        return sum(1 for _ in read_texts(path, field, errors))
    with path.open("rb") as data:
        count = sum(chunk.count(b"\n") for chunk in iter(lambda: data.read(1 << 20), b""))
        data.seek(max(0, data.tell() - 1))
        ends_open = data.tell() > 0 and data.read(1) != b"\n"
    return count + int(ends_open)


def sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices in batches of ``batch_size``, shortest first, so that each request the server
    gets holds texts of about one length (little padding). Stable: equal lengths keep order."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


class RowsInOrder:
    """Sentence vectors of length-sorted batches put back in input order: (count, width)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.rows: np.ndarray | None = None

    def add(self, positions: list[int], result: Any) -> None:
        vectors = result.sentence_embedding
        if vectors is None or vectors.ndim != 2:
            raise ValueError("bulk embedding needs one sentence vector per text")
        if self.rows is None:
            self.rows = np.full((self.count, vectors.shape[1]), np.nan, dtype=np.float32)
        self.rows[positions] = vectors

    def result(self, width: int = 0) -> np.ndarray:
        """The rows; ``width`` wide when none was added (rows without a vector are NaN)."""
        if self.rows is None:
            self.rows = np.full((self.count, width), np.nan, dtype=np.float32)
        return self.rows


@dataclass(eq=False)
class _Window:
    """``read_ahead`` consecutive texts: sent as length-sorted batches, written in input
    order once every batch is back."""

    start: int  # row of the first text
    size: int
    batches: list[list[int]]  # positions in the window, shortest texts first; blank texts
    # are never sent and keep their NaN rows
    rows: RowsInOrder
    skipped: int  # lines that were not UTF-8 (--errors skip): rows of NaN
    answered: int = 0
    work: list[int] = field(default_factory=list)  # bytes of text per batch (progress)

    @property
    def complete(self) -> bool:
        return self.answered == len(self.batches)


@dataclass(frozen=True)
class BulkResult:
    """What ``embed_file`` wrote: ``rows`` (one per text), ``skipped`` of them NaN because
    their line was not UTF-8 (``errors="skip"``)."""

    rows: int
    skipped: int


def embed_file(
    client: Any,
    input_path: Path,
    output_path: Path,
    *,
    field: str = "text",
    errors: str = "fail",
    batch_size: int = 32,
    window: int = 8,
    read_ahead: int = 4096,
    lengths: Callable[[list[str]], list[int]] | None = None,
    progress: bool | None = None,
    **options: Any,
) -> BulkResult:
    """Embed every text of ``input_path`` into ``output_path`` (rows in input order).

    Texts are read ``read_ahead`` at a time, sorted by length and sent over one EmbedStream
    as batches of ``batch_size`` similar lengths (``window`` in flight), then written back in
    input order: the server computes little padding however the file is ordered. Lengths are
    character counts, or what ``lengths(texts)`` says (token counts, from the model's own
    tokenizer: ``load_tokenizer(folder).lengths``). A blank text gets a row of NaN (it has no
    embedding); so does a line that is not UTF-8 with ``errors="skip"`` (``"fail"``: raise
    ``BulkError`` naming the line). ``options`` go to ``Client.embed_stream`` and must give
    one sentence vector per text. A rerun after an interruption continues from the rows in
    ``<output>.partial`` once they match their progress record (``resume``). ``progress``:
    rows, rows/s and ETA on stderr from the first batch (None: only when it is a terminal).
    """
    suffix = output_path.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise ValueError(f"output {output_path}: use a .npy or .parquet file")
    if suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ModuleNotFoundError:
            raise ModuleNotFoundError(PYARROW_HINT, name="pyarrow") from None
    if batch_size < 1 or read_ahead < 1:
        raise ValueError("batch size and read-ahead must be at least 1")
    stat = input_path.stat()
    job = BulkJob(
        str(input_path.resolve()), stat.st_size, stat.st_mtime_ns, field, _job_options(options)
    )
    partial = output_path.with_name(output_path.name + ".partial")
    sidecar = output_path.with_name(output_path.name + ".progress.json")
    total = count_texts(input_path, field, errors)
    earlier = resume.resume(job.key(), partial, sidecar)
    done = earlier.rows if earlier else 0
    skipped = earlier.skipped if earlier else 0
    answered_by: dict[str, Any] = earlier.answered_by if earlier else {}
    # the time left is reckoned from bytes of text (a .txt file's size): each window sends its
    # shortest texts first, so rows alone would promise too much early on
    txt = input_path.suffix.lower() not in (".jsonl", ".ndjson")
    bar = (
        Progress(total, done, total_work=stat.st_size if txt else None)
        if wanted(progress)
        else None
    )
    # windows whose batches were handed to the stream, oldest first (appended by the
    # stream's sending thread, taken here: deque appends and pops are thread-safe)
    sent: deque[_Window] = deque()

    def batches(resume_at: int = done) -> Iterator[list[str]]:
        texts: list[str | None] = []
        start = resume_at
        resumed_bytes = 0
        for index, text in enumerate(read_texts(input_path, field, errors)):
            if index < resume_at:
                resumed_bytes += _bytes(text)
                continue
            if index == resume_at and bar and resumed_bytes:
                bar.skip_done(0, resumed_bytes)
            texts.append(text)
            if len(texts) == read_ahead:
                yield from plan(start, texts)
                start, texts = start + len(texts), []
        if texts:
            yield from plan(start, texts)

    def plan(start: int, texts: list[str | None]) -> Iterator[list[str]]:
        kept = [i for i, text in enumerate(texts) if text is not None and text.strip()]
        kept_texts = [texts[i] or "" for i in kept]
        sizes = lengths(kept_texts) if lengths else [len(text) for text in kept_texts]
        groups = sorted_batches(sizes, batch_size)
        groups = [[kept[i] for i in group] for group in groups]
        unread = sum(text is None for text in texts)
        work = [sum(_bytes(texts[i]) for i in group) for group in groups]
        sent.append(_Window(start, len(texts), groups, RowsInOrder(len(texts)), unread, work=work))
        for group in groups:
            yield [texts[i] or "" for i in group]

    with partial.open("ab") as rows:

        def write_finished() -> None:
            """Write out the windows at the head of the line that are complete."""
            nonlocal done, skipped
            while sent and sent[0].complete and answered_by:
                finished = sent.popleft()
                data = finished.rows.result(width=answered_by["width"]).tobytes()
                rows.write(data)
                rows.flush()
                os.fsync(rows.fileno())
                done += finished.size
                skipped += finished.skipped
                # the record is replaced after the rows are on disk: it never claims rows
                # the partial file lacks
                record = resume.Record(
                    job.key(),
                    done,
                    **answered_by,
                    skipped=skipped,
                    tail_rows=finished.size,
                    tail_sha256=resume.checksum(data),
                )
                resume.save(sidecar, record)
                if bar:  # the rows never sent (blank, not UTF-8) count once written
                    unsent = finished.size - sum(len(group) for group in finished.batches)
                    bar.update(unsent, work=sum(_bytes(None) for _ in range(unsent)))

        for result in client.embed_stream(batches(), window=window, **options):
            current = next(w for w in sent if not w.complete)  # answers come in order
            current.rows.add(current.batches[current.answered], result)
            if bar:  # from the first answer on, not per window of --read-ahead rows
                bar.update(len(current.batches[current.answered]), current.work[current.answered])
            current.answered += 1
            answered_by = _check_same_model(answered_by, result, partial)
            write_finished()
        write_finished()
    if bar:
        bar.update(0, final=True)
    if done != total:
        if total and not answered_by:
            raise BulkError(f"{input_path}: every text is blank; nothing to embed")
        raise RuntimeError(f"embedded {done} rows but the input has {total}")
    _finish(partial, output_path, done, answered_by.get("width", 0))
    sidecar.unlink(missing_ok=True)
    partial.unlink(missing_ok=True)
    return BulkResult(done, skipped)


def _bytes(text: str | None) -> int:
    """A line's share of a .txt file's size (its newline included)."""
    return len(text.encode("utf-8", "surrogatepass")) + 1 if text is not None else 1


def _job_options(options: dict[str, Any]) -> dict[str, Any]:
    """What the options compute, so that the same job spelled otherwise (the CLI's explicit
    defaults, or an ``EmbedOptions``) resumes too."""
    words = {k: v for k, v in options.items() if k not in ("options", "model", "variant")}
    value = asdict(EmbedOptions.of(options.get("options"), words))  # type: ignore[arg-type]
    for name, default in LONG_DEFAULTS.items():  # named when set: older jobs still resume
        if value[name] == default:
            del value[name]
    return {**value, "model": options.get("model"), "variant": options.get("variant")}


def _check_same_model(answered_by: dict[str, Any], result: Any, partial: Path) -> dict[str, Any]:
    """The model, variant and width of the rows so far; a resumed job must keep them."""
    now = {
        "model": result.model,
        "variant": result.variant,
        "width": int(result.sentence_embedding.shape[1]),
    }
    if answered_by and answered_by != now:
        raise BulkError(
            f"{partial} holds rows of {answered_by['model']}/{answered_by['variant']} "
            f"({answered_by['width']} wide) but the server now answers with "
            f"{now['model']}/{now['variant']} ({now['width']} wide): pass the same --model "
            f"and --variant as before, or delete {partial.name} to start over"
        )
    return now


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

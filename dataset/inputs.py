"""A job's input: Parquet, JSONL or text files, cut into blocks of rows that any worker can read
on its own (a row range of a Parquet file, a byte range of a text file).

Ids are stable across reruns: a row's ``--id-column`` value (as a string), else
``<file>:<row>`` where ``<file>`` is the path under INPUT and ``<row>`` the row index of a
Parquet file (from 0) or the line number of a JSONL or text file (from 1; blank lines are
skipped, not rows).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

KINDS = {".parquet": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".txt": "text"}


class InputError(ValueError):
    """An input the job cannot use; the message names the file and, where it can, the row."""


@dataclass(frozen=True)
class InputFile:
    """One input file: its path, its name under INPUT (used in ids and output names), its kind,
    and the size and mtime a rerun checks to know it is unchanged."""

    path: str
    name: str
    kind: str
    size: int
    mtime_ns: int

    @property
    def fingerprint(self) -> list[int]:
        return [self.size, self.mtime_ns]


@dataclass(frozen=True)
class Block:
    """Rows ``first_row .. first_row + rows`` of one file (Parquet row index), or the rows in
    bytes ``start .. end`` of a text file whose first line is ``first_row`` (from 1)."""

    file: InputFile
    index: int
    first_row: int
    rows: int
    start: int = 0
    end: int = 0

    @property
    def key(self) -> str:
        """The block's name in OUTPUT: ``<file>.<index>`` (stable across reruns)."""
        return f"{self.file.name}.{self.index:06d}"

    def to_dict(self) -> dict[str, Any]:
        """Flat, for Ray Data rows."""
        data = {k: v for k, v in asdict(self).items() if k != "file"}
        data.update({f"file_{k}": v for k, v in asdict(self.file).items()})
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Block:
        def plain(value: Any) -> Any:
            return value.item() if hasattr(value, "item") else value

        values = {k: plain(v) for k, v in data.items()}
        file = InputFile(
            str(values["file_path"]),
            str(values["file_name"]),
            str(values["file_kind"]),
            int(values["file_size"]),
            int(values["file_mtime_ns"]),
        )
        return cls(
            file,
            int(values["index"]),
            int(values["first_row"]),
            int(values["rows"]),
            int(values["start"]),
            int(values["end"]),
        )


def discover(source: Path) -> list[InputFile]:
    """The input files of a file or a directory (recursively; names starting with "." or "_"
    are skipped, as Parquet readers do), in name order."""
    source = Path(source)
    if source.is_file():
        found = [(source, source.name)]
    elif source.is_dir():
        found = [
            (path, path.relative_to(source).as_posix())
            for path in sorted(source.rglob("*"))
            if path.is_file()
            and path.suffix.lower() in KINDS
            and not any(part.startswith((".", "_")) for part in path.relative_to(source).parts)
        ]
        if not found:
            raise InputError(
                f"{source}: no input files (.parquet, .jsonl, .ndjson or .txt) in the directory"
            )
    else:
        raise InputError(f"{source}: no such file or directory")
    files = []
    for path, name in found:
        kind = KINDS.get(path.suffix.lower())
        if kind is None:
            raise InputError(f"{path}: unknown input format; allowed .parquet, .jsonl, .txt")
        stat = path.stat()
        files.append(InputFile(str(path.resolve()), name, kind, stat.st_size, stat.st_mtime_ns))
    return files


def plan(file: InputFile, block_rows: int, text_column: str, id_column: str | None) -> list[Block]:
    """The file's blocks of at most ``block_rows`` rows; InputError for an unreadable or empty
    file, a missing column, or an id column in a plain text file."""
    if file.kind == "parquet":
        return _plan_parquet(file, block_rows, text_column, id_column)
    if file.kind == "text" and id_column:
        raise InputError(
            f"{file.path}: a .txt file has no columns, so no id column {id_column!r}; "
            "its rows get <file>:<line> ids (drop --id-column, or use .jsonl/.parquet)"
        )
    blocks: list[Block] = []
    try:
        with open(file.path, "rb") as data:
            offset = line = 0
            start = first = rows = 0
            for raw in data:
                line += 1
                if raw.strip():
                    if rows == 0:
                        start, first = offset, line
                    rows += 1
                    if rows == block_rows:
                        blocks.append(
                            Block(file, len(blocks), first, rows, start, offset + len(raw))
                        )
                        rows = 0
                offset += len(raw)
            if rows:
                blocks.append(Block(file, len(blocks), first, rows, start, offset))
    except OSError as error:
        raise InputError(f"{file.path}: cannot be read: {error.strerror or error}") from None
    if not blocks:
        raise InputError(f"{file.path}: empty (no rows); remove it or give another INPUT")
    return blocks


def _parquet(path: str) -> Any:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except OSError as error:
        raise InputError(f"{path}: cannot be read as Parquet: {error}") from None
    except Exception as error:  # pyarrow's ArrowInvalid for a damaged file
        raise InputError(f"{path}: cannot be read as Parquet: {error}") from None


def _plan_parquet(
    file: InputFile, block_rows: int, text_column: str, id_column: str | None
) -> list[Block]:
    import pyarrow as pa

    schema = _parquet(file.path).schema_arrow
    for role, column in (("text", text_column), ("id", id_column)):
        if column and column not in schema.names:
            flag = "--text-column" if role == "text" else "--id-column"
            raise InputError(
                f"{file.path}: no column {column!r} (the {role} column, {flag}); "
                f"it has {schema.names}"
            )
    kind = schema.field(text_column).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise InputError(
            f"{file.path}: column {text_column!r} holds {kind}, not strings; "
            "point --text-column at a string column"
        )
    rows = _parquet(file.path).metadata.num_rows
    if rows == 0:
        raise InputError(f"{file.path}: empty (no rows); remove it or give another INPUT")
    return [
        Block(file, index, first, min(block_rows, rows - first))
        for index, first in enumerate(range(0, rows, block_rows))
    ]


def read(block: Block, text_column: str, id_column: str | None) -> tuple[list[str], list[str]]:
    """The block's ids and texts; InputError naming the file and row of a bad value."""
    if block.file.kind == "parquet":
        return _read_parquet(block, text_column, id_column)
    ids: list[str] = []
    texts: list[str] = []
    path = block.file.path
    try:
        with open(path, "rb") as data:
            data.seek(block.start)
            chunk = data.read(block.end - block.start)
    except OSError as error:
        raise InputError(f"{path}: cannot be read: {error.strerror or error}") from None
    for number, raw in enumerate(chunk.split(b"\n"), block.first_row):
        if not raw.strip():
            continue
        where = f"{path}:{number}"
        try:
            line = raw.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError as error:
            raise InputError(f"{where}: not UTF-8 ({error.reason} at byte {error.start})") from None
        if block.file.kind == "text":
            ids.append(f"{block.file.name}:{number}")
            texts.append(line)
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"{where}: not JSON: {error.msg}") from None
        if not isinstance(item, dict):
            raise InputError(
                f"{where}: a JSON {type(item).__name__}, not an object with a {text_column!r} field"
            )
        if text_column not in item:
            raise InputError(
                f"{where}: no field {text_column!r} (the text column, --text-column); "
                f"it has {sorted(item)}"
            )
        text = item[text_column]
        if not isinstance(text, str):
            raise InputError(
                f"{where}: field {text_column!r} is {json.dumps(text)[:40]} "
                f"({type(text).__name__}), not a string"
            )
        if id_column:
            if item.get(id_column) is None:
                raise InputError(f"{where}: no id in field {id_column!r} (--id-column)")
            ids.append(str(item[id_column]))
        else:
            ids.append(f"{block.file.name}:{number}")
        texts.append(text)
    if len(texts) != block.rows:
        raise InputError(
            f"{path}: has changed since the job planned it ({len(texts)} rows where "
            f"{block.rows} were); start again with a new OUTPUT"
        )
    _check_texts(texts, block, text_column)
    return ids, texts


def _read_parquet(
    block: Block, text_column: str, id_column: str | None
) -> tuple[list[str], list[str]]:
    parquet = _parquet(block.file.path)
    metadata = parquet.metadata
    groups, first, seen = [], None, 0
    for group in range(metadata.num_row_groups):
        size = metadata.row_group(group).num_rows
        if seen + size > block.first_row and seen < block.first_row + block.rows:
            groups.append(group)
            first = seen if first is None else first
        seen += size
    columns = [text_column] + ([id_column] if id_column else [])
    try:
        table = parquet.read_row_groups(groups, columns=columns)
    except Exception as error:
        raise InputError(f"{block.file.path}: cannot be read as Parquet: {error}") from None
    table = table.slice(block.first_row - (first or 0), block.rows)
    texts = table.column(text_column).to_pylist()
    for offset, text in enumerate(texts):
        if text is None:
            raise InputError(
                f"{block.file.path}: row {block.first_row + offset}: column {text_column!r} is "
                "null, not a string"
            )
    if id_column:
        ids = []
        for offset, value in enumerate(table.column(id_column).to_pylist()):
            if value is None:
                raise InputError(
                    f"{block.file.path}: row {block.first_row + offset}: no id "
                    f"(column {id_column!r} is null)"
                )
            ids.append(str(value))
    else:
        ids = [f"{block.file.name}:{block.first_row + i}" for i in range(len(texts))]
    _check_texts(texts, block, text_column)
    return ids, texts


def _check_texts(texts: list[str], block: Block, text_column: str) -> None:
    for position, text in enumerate(texts):
        if not text:
            raise InputError(
                f"{row_of(block, position)}: {text_column!r} is an empty string; "
                "the model needs at least one character"
            )


def row_of(block: Block, position: int) -> str:
    """Where the ``position``-th row of a block is: ``path:line`` or ``path: row N``."""
    if block.file.kind == "parquet":
        return f"{block.file.path}: row {block.first_row + position}"
    # text rows skip blank lines: count them again to name the line
    with open(block.file.path, "rb") as data:
        data.seek(block.start)
        chunk = data.read(block.end - block.start)
    seen = -1
    for number, raw in enumerate(chunk.split(b"\n"), block.first_row):
        if raw.strip():
            seen += 1
            if seen == position:
                return f"{block.file.path}:{number}"
    return f"{block.file.path}: row {position} of block {block.index}"

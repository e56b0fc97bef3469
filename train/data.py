"""Labelled text data from CSV or JSONL: columns, labels, the fixed SHA-1 split, checksums.

Pure Python: no torch, no scikit-learn.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SUFFIXES = (".jsonl", ".csv")
SPLITS = ("train", "validation", "test")


class DataError(Exception):
    """Data that cannot be used; the message says what was wrong and what is allowed."""


@dataclass
class Split:
    """Parallel lists: texts, second segments (None when the data has no pairs), labels."""

    texts: list[str] = field(default_factory=list)
    pairs: list[str] | None = None
    labels: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)

    def add(self, text: str, pair: str | None, label: str) -> None:
        self.texts.append(text)
        if pair is not None:
            if self.pairs is None:
                self.pairs = []
            self.pairs.append(pair)
        self.labels.append(label)

    def label_ids(self, label_names: list[str]) -> list[int]:
        index = {name: i for i, name in enumerate(label_names)}
        return [index[label] for label in self.labels]


@dataclass
class Dataset:
    """A labelled data set split three ways, with its label names and a checksum of its files."""

    train: Split
    validation: Split
    test: Split
    label_names: list[str]  # sorted; the class ids are their positions
    sha256: str  # of the data files, in name order
    source: str

    def summary(self) -> dict:
        """Rows per split and label, for manifests and logs."""
        return {
            "source": self.source,
            "sha256": self.sha256,
            "labels": self.label_names,
            "rows": {
                name: {label: getattr(self, name).labels.count(label) for label in self.label_names}
                for name in SPLITS
            },
        }


def text_hash(text: str, pair: str | None = None) -> int:
    """SHA-1 of the UTF-8 text (and its pair, after a unit separator) read as an integer."""
    key = text if pair is None else f"{text}\x1f{pair}"
    return int(hashlib.sha1(key.encode("utf-8")).hexdigest(), 16)


def is_test(text: str, pair: str | None = None) -> bool:
    """The fixed test split: one row in ten, by content, so duplicates stay on one side."""
    return text_hash(text, pair) % 10 == 0


def is_validation(text: str, pair: str | None = None) -> bool:
    """The validation rows carved out of training data (one in twenty, disjoint from test)."""
    return text_hash(text, pair) % 20 == 1


def _decode(path: Path, encoding: str) -> str:
    """The file's text, or DataError naming the line (and row) that is not ``encoding``."""
    raw = path.read_bytes()
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        where = f"line {line}"
        if path.suffix == ".csv":  # a CSV row may span lines: count the rows read before
            before = raw[: raw.rfind(b"\n", 0, exc.start) + 1].decode(encoding)
            where = f"row {sum(1 for _ in csv.reader(io.StringIO(before)))} ({where})"
        raise DataError(
            f"{path}: {where} is not valid {encoding}: bytes {raw[exc.start : exc.start + 4]!r}; "
            "convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8) or name its encoding "
            "with --encoding"
        ) from None
    return text.removeprefix("\ufeff")


def _records(path: Path, encoding: str) -> tuple[list[str], list[tuple[int, dict]]]:
    """The column names and (row number, record) of a .csv or .jsonl file."""
    if path.suffix not in SUFFIXES:
        raise DataError(f"{path}: unknown format; allowed: {', '.join(SUFFIXES)} files")
    text = _decode(path, encoding)
    if not text.strip():
        raise DataError(f"{path}: empty file; it needs a header (CSV) or objects (JSONL) and rows")
    if path.suffix == ".csv":
        # universal newlines: a text's \r\n reads as \n, as it does for the split's hash
        reader = csv.DictReader(io.StringIO(text))
        columns = list(reader.fieldnames or [])
        return columns, [(i, dict(r)) for i, r in enumerate(reader, start=1)]
    records, columns = [], {}
    # split on \n only: str.splitlines() also breaks at U+0085 and U+2028 inside strings
    for line_number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise DataError(f"{path}: line {line_number} is not JSON: {exc}") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}: line {line_number} is not a JSON object")
        columns.update(dict.fromkeys(record))
        records.append((line_number, record))
    return list(columns), records


def read_split(
    path: Path,
    *,
    text_column: str = "text",
    pair_column: str | None = None,
    label_column: str = "label",
    encoding: str = "utf-8",
) -> Split:
    """Every row of one file; DataError for a missing column, an empty file or an empty value."""
    path = Path(path)
    columns, records = _records(path, encoding)
    for what, name in (("text", text_column), ("label", label_column), ("pair", pair_column)):
        if name is not None and name not in columns:
            raise DataError(
                f"{path}: no {what} column {name!r}; the file has columns {columns}; "
                f"choose one with --{what}-column"
            )
    if not records:
        raise DataError(f"{path}: no rows, only a header")
    split = Split()
    where = "line" if path.suffix == ".jsonl" else "row"
    for number, record in records:
        text, label = record.get(text_column), record.get(label_column)
        pair = record.get(pair_column) if pair_column else None
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{path}: {where} {number} has no text in column {text_column!r}")
        if pair_column and (not isinstance(pair, str) or not pair.strip()):
            raise DataError(f"{path}: {where} {number} has no text in column {pair_column!r}")
        if label is None or label == "" or isinstance(label, dict | list):
            raise DataError(
                f"{path}: {where} {number} has no label in column {label_column!r} "
                "(allowed: a string or a number)"
            )
        split.add(text, pair, str(label))
    return split


def _file(folder: Path, name: str) -> Path | None:
    found = [
        folder / f"{name}{suffix}" for suffix in SUFFIXES if (folder / f"{name}{suffix}").is_file()
    ]
    if len(found) > 1:
        raise DataError(f"{folder} holds both {found[0].name} and {found[1].name}; keep one")
    return found[0] if found else None


def _carve(
    split: Split, keep: Callable[[str, str | None], bool], pairs: bool
) -> tuple[Split, Split]:
    """(rows where keep(text, pair), the others)."""
    kept, rest = Split(), Split()
    for i, (text, label) in enumerate(zip(split.texts, split.labels, strict=True)):
        pair = split.pairs[i] if pairs and split.pairs is not None else None
        (kept if keep(text, pair) else rest).add(text, pair, label)
    return kept, rest


def load_dataset(
    path: Path,
    *,
    text_column: str = "text",
    pair_column: str | None = None,
    label_column: str = "label",
    encoding: str = "utf-8",
) -> Dataset:
    """A folder with train and test files (validation optional) or one file, split three ways.

    One file: the test rows are those whose text's SHA-1 is divisible by 10. Without a
    validation file, one training row in twenty (by SHA-1, too) becomes validation.
    Labels are the sorted set of the training labels; at least two are needed.
    """
    path = Path(path)
    columns = {
        "text_column": text_column,
        "pair_column": pair_column,
        "label_column": label_column,
        "encoding": encoding,
    }
    pairs = pair_column is not None
    if path.is_dir():
        train_file, test_file = _file(path, "train"), _file(path, "test")
        if train_file is None or test_file is None:
            raise DataError(
                f"{path} needs train.jsonl (or .csv) and test.jsonl (or .csv); it holds "
                f"{sorted(p.name for p in path.iterdir())}"
            )
        validation_file = _file(path, "validation")
        files = [f for f in (train_file, validation_file, test_file) if f is not None]
        train = read_split(train_file, **columns)
        test = read_split(test_file, **columns)
        if validation_file is not None:
            validation = read_split(validation_file, **columns)
        else:
            validation, train = _carve(train, is_validation, pairs)
    elif path.is_file():
        files = [path]
        test, rest = _carve(read_split(path, **columns), is_test, pairs)
        validation, train = _carve(rest, is_validation, pairs)
    else:
        raise DataError(f"{path}: no such file or folder")
    label_names = sorted(set(train.labels))
    if len(label_names) < 2:
        raise DataError(
            f"{path}: the training rows have a single class ({label_names[0]!r}); a classifier "
            "needs at least two"
        )
    for name, split in (("validation", validation), ("test", test)):
        unknown = sorted(set(split.labels) - set(label_names))
        if unknown:
            raise DataError(
                f"{path}: the {name} rows have labels the training rows lack: {unknown}; "
                f"training labels are {label_names}"
            )
    for name, split in (("train", train), ("validation", validation), ("test", test)):
        if not split:
            raise DataError(f"{path}: the {name} split is empty; the data needs more rows")
    digest = hashlib.sha256()
    for file in sorted(files):
        digest.update(file.name.encode() + b"\0" + file.read_bytes())
    return Dataset(train, validation, test, label_names, digest.hexdigest(), str(path.resolve()))

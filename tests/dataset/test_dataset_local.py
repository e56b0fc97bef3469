"""`bertserve embed-dataset` with the local engine: the server's vectors, every id once,
options carried through, resuming after the driver is killed, and clear errors for bad input
with nothing half-written that a rerun would trust."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bertserve.dataset import FeatureOptions, InputError, Job, read_output, run
from dataset_helpers import assert_matches, server_vectors, vectors_by_id

CLI = [sys.executable, "-m", "bertserve.client.cli", "embed-dataset"]


def job(input_path: Path, output: Path, repo: Path, **kwargs) -> Job:
    return Job(
        input=str(input_path),
        output=str(output),
        model="minilm",
        repo=str(repo),
        progress=False,
        **kwargs,
    )


@pytest.fixture(scope="module")
def local_output(corpus_jsonl: Path, model_repo: Path, tmp_path_factory) -> tuple[Path, dict]:
    """The whole corpus embedded once by the local engine (blocks of 500 rows)."""
    out = tmp_path_factory.mktemp("local") / "out"
    report = run(job(corpus_jsonl, out, model_repo, block_rows=500))
    return out, report


def test_local_engine_gives_the_servers_vectors_and_every_id_once(
    local_output, texts, reference, model_repo
):
    out, report = local_output
    ids = [f"corpus.jsonl:{line}" for line in range(1, len(texts) + 1)]
    assert_matches(read_output(out), ids, reference)
    assert report["computed_rows"] == len(texts) and report["skipped_rows"] == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["rows"] == len(texts)
    assert manifest["job"]["model"] == "minilm" and manifest["job"]["variant"] == "fp32-opt"
    # the package checksum covers the files (and their sha256s) the package's manifest lists
    files = json.loads((model_repo / "minilm" / "fp32-opt" / "manifest.json").read_text())["files"]
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    assert manifest["job"]["checksum"] == digest
    table = read_output(out)
    assert table.schema.field("vector").type == pa.list_(pa.float32(), 384)


def test_a_rerun_of_a_complete_job_computes_nothing(local_output, corpus_jsonl, model_repo):
    out, _ = local_output
    report = run(job(corpus_jsonl, out, model_repo, block_rows=500))
    assert report["computed_rows"] == 0 and report["skipped_blocks"] == 4
    # a different job into the same output is refused, naming what differs
    with pytest.raises(ValueError, match="differs in options"):
        run(job(corpus_jsonl, out, model_repo, block_rows=500, options=FeatureOptions("cls")))


@pytest.mark.parametrize(
    "options",
    [
        {"pooling": "cls", "normalize": True, "dtype": "float16"},
        {"pooling": "max", "aggregate": "sum_last_4", "dtype": "bfloat16"},
        {"pooling": "mean", "layers": "-1,2"},
    ],
    ids=["cls-normalize-float16", "max-sum_last_4-bfloat16", "mean-layers"],
)
def test_options_are_carried_through(options, texts, live_server, model_repo, tmp_path):
    sample = texts[:48]
    source = tmp_path / "sample.txt"
    source.write_text("\n".join(sample) + "\n", encoding="utf-8")
    feature_options = FeatureOptions.parse(**options)
    run(job(source, tmp_path / "out", model_repo, options=feature_options))
    table = read_output(tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["job"]["options"] == feature_options.to_dict()
    element = {"float16": pa.float16(), "bfloat16": pa.uint16()}.get(
        options.get("dtype"), pa.float32()
    )
    assert table.schema.field("vector").type.value_type == element
    client_options = feature_options.client_kwargs()
    from bertserve.client import Client

    with Client(live_server.target, model="minilm") as client:
        expected = client.embed(sample, **client_options)
    ids = [f"sample.txt:{line}" for line in range(1, len(sample) + 1)]
    got = vectors_by_id(table)
    vectors = np.stack([got[i] for i in ids])
    if options.get("dtype") == "bfloat16":  # stored as bits; the client widens to float32
        vectors = (vectors.astype(np.uint32) << 16).view(np.float32)
    np.testing.assert_allclose(vectors.astype(np.float32), expected.sentence_embedding, atol=1e-3)
    if options.get("dtype") in ("float16", "bfloat16"):
        # the same rounding as the server: equal bits, bar the last place where fp32 differed
        assert np.mean(vectors.astype(np.float32) == expected.sentence_embedding) > 0.95
    if "layers" in options:
        for layer in (6, 2):
            column = table.column(f"hidden_states_{layer}").to_pylist()
            by_id = dict(zip(table.column("id").to_pylist(), column, strict=True))
            for position, row_id in enumerate(ids):
                tokens = np.asarray(by_id[row_id], dtype=np.float32)
                want = expected.hidden_states[layer][position]
                assert tokens.shape == want.shape
                assert np.max(np.abs(tokens - want)) <= 1e-4


def test_parquet_with_an_id_column_and_a_directory_of_formats(
    texts, reference, model_repo, tmp_path
):
    source = tmp_path / "in"
    (source / "part").mkdir(parents=True)
    pq.write_table(
        pa.table({"doc_id": [f"d{i}" for i in range(300)], "body": texts[:300]}),
        source / "part" / "a.parquet",
        row_group_size=64,  # blocks cut across row groups
    )
    with (source / "b.jsonl").open("w") as out:
        for i, text in enumerate(texts[300:500]):
            out.write(json.dumps({"body": text, "doc_id": f"d{300 + i}"}) + "\n")
            if i % 50 == 0:
                out.write("\n")  # blank lines are not rows
    (source / "_skipped.jsonl").write_text("not json\n")  # "_" files are not inputs
    out = tmp_path / "out"
    run(job(source, out, model_repo, text_column="body", id_column="doc_id", block_rows=90))
    assert_matches(read_output(out), [f"d{i}" for i in range(500)], reference[:500])
    # and without an id column: <file>:<row>, rows of Parquet from 0
    out2 = tmp_path / "out2"
    run(job(source / "part", out2, model_repo, text_column="body", block_rows=1000))
    assert_matches(read_output(out2), [f"a.parquet:{i}" for i in range(300)], reference[:300])


def test_interrupted_then_rerun_completes_without_duplicates(
    corpus_jsonl, texts, reference, model_repo, tmp_path
):
    out = tmp_path / "out"
    command = [*CLI, str(corpus_jsonl), str(out), "--repo", str(model_repo), "--model", "minilm"]
    command += ["--block-rows", "100", "--no-progress"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    markers = out / "_done"
    # markers are written under a hidden temporary name and renamed: count only the real ones
    while first.poll() is None and not list(markers.glob("*.json")):
        time.sleep(0.02)  # polling: the job's own marker says when the first block is done
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert first.returncode == -signal.SIGKILL, "the run finished before it was killed"
    done_before = len(list(markers.glob("*.json")))
    assert 0 < done_before < len(texts) // 100
    assert not json.loads((out / "manifest.json").read_text())["complete"]

    second = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr
    report = json.loads(second.stdout)
    assert report["skipped_rows"] >= done_before * 100
    assert report["computed_rows"] == len(texts) - report["skipped_rows"] < len(texts)
    ids = [f"corpus.jsonl:{line}" for line in range(1, len(texts) + 1)]
    assert_matches(read_output(out), ids, reference)
    # the data files are exactly the blocks: a block written twice has one file
    assert len(list((out / "data").glob("*.parquet"))) == len(texts) // 100


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        (
            "missing-field",
            lambda p, t: write_jsonl(p / "x.jsonl", [{"text": s} for s in t] + [{"body": "hi"}]),
            r"x\.jsonl:121: no field 'text' \(the text column, --text-column\); it has \['body'\]",
        ),
        (
            "non-string",
            lambda p, t: write_jsonl(p / "x.jsonl", [{"text": s} for s in t] + [{"text": 42}]),
            r"x\.jsonl:121: field 'text' is 42 \(int\), not a string",
        ),
        (
            "empty-string",
            lambda p, t: write_jsonl(p / "x.jsonl", [{"text": s} for s in t] + [{"text": ""}]),
            r"x\.jsonl:121: 'text' is an empty string",
        ),
        (
            "not-json",
            lambda p, t: (p / "x.jsonl").write_text(
                "".join(json.dumps({"text": s}) + "\n" for s in t) + "{oops\n"
            ),
            r"x\.jsonl:121: not JSON",
        ),
        (
            "not-utf8",
            lambda p, t: (p / "x.txt").write_bytes("\n".join(t).encode() + b"\ncaf\xe9 au lait\n"),
            r"x\.txt:121: not UTF-8",
        ),
        (
            "parquet-null",
            lambda p, t: pq.write_table(pa.table({"text": list(t) + [None]}), p / "x.parquet"),
            r"x\.parquet: row 120: column 'text' is null, not a string",
        ),
    ],
)
def test_a_bad_row_is_named_and_its_block_is_not_trusted(
    name, make, message, texts, model_repo, tmp_path
):
    source = tmp_path / "in"
    source.mkdir()
    make(source, texts[:120])
    out = tmp_path / "out"
    with pytest.raises(InputError, match=message):
        run(job(source, out, model_repo, block_rows=100))
    # the good first block is complete and kept; the bad one left no data file and no marker
    (source_file,) = source.iterdir()
    assert [p.name for p in (out / "_done").iterdir()] == [f"{source_file.name}.000000.json"]
    assert [p.name for p in (out / "data").iterdir()] == [f"{source_file.name}.000000.parquet"]
    assert not json.loads((out / "manifest.json").read_text())["complete"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: (p / "x.jsonl").write_text(""), r"x\.jsonl: empty \(no rows\)"),
        (lambda p: (p / "x.jsonl").write_text("\n\n  \n"), r"x\.jsonl: empty \(no rows\)"),
        (lambda p: (p / "x.parquet").write_bytes(b"PAR1 not really"), r"cannot be read as Parquet"),
        (
            lambda p: pq.write_table(pa.table({"body": ["a"]}), p / "x.parquet"),
            r"x\.parquet: no column 'text' \(the text column, --text-column\); it has \['body'\]",
        ),
        (
            lambda p: pq.write_table(pa.table({"text": [1, 2]}), p / "x.parquet"),
            r"x\.parquet: column 'text' holds int64, not strings",
        ),
        (
            lambda p: pq.write_table(pa.table({"text": pa.array([], "string")}), p / "x.parquet"),
            r"x\.parquet: empty \(no rows\)",
        ),
    ],
    ids=["empty", "blank", "damaged-parquet", "no-column", "not-strings", "empty-parquet"],
)
def test_a_bad_file_is_refused_before_any_work(make, message, model_repo, tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    make(source)
    with pytest.raises(InputError, match=message):
        run(job(source, tmp_path / "out", model_repo))
    assert not (tmp_path / "out").exists()


def test_the_cli_names_what_is_wrong(corpus_jsonl, model_repo, tmp_path):
    def cli(*args: str) -> subprocess.CompletedProcess:
        command = [*CLI, str(corpus_jsonl), str(tmp_path / "out"), "--repo", str(model_repo)]
        return subprocess.run([*command, *args], capture_output=True, text=True, timeout=300)

    missing = cli("--model", "nope")
    assert missing.returncode == 2
    assert "model 'nope' is not in" in missing.stderr and "['minilm']" in missing.stderr
    variant = cli("--model", "minilm", "--variant", "fp16")
    assert variant.returncode == 2 and "variant 'fp16' of model 'minilm'" in variant.stderr
    column = cli("--model", "minilm", "--id-column", "doc")
    assert column.returncode == 2 and "corpus.jsonl:1: no id in field 'doc'" in column.stderr
    written = [p.name for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert written == ["manifest.json"]


def test_ray_missing_says_how_to_install_it(corpus_jsonl, model_repo, tmp_path):
    code = (
        "import sys; sys.modules['ray'] = None; "  # what an install without [ray] looks like
        "from bertserve.client.cli import main; "
        f"sys.exit(main(['embed-dataset', {str(corpus_jsonl)!r}, {str(tmp_path / 'o')!r}, "
        f"'--repo', {str(model_repo)!r}, '--model', 'minilm', '--engine', 'ray']))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 2
    assert "pip install -e '.[ray]'" in done.stderr


def test_target_calls_running_servers(live_server, texts, tmp_path):
    sample = texts[:200]
    source = tmp_path / "s.txt"
    source.write_text("\n".join(sample) + "\n")
    out = tmp_path / "out"
    report = run(
        Job(
            input=str(source),
            output=str(out),
            model="minilm",
            target=live_server.target,
            block_rows=64,
            progress=False,
        )
    )
    assert report["engine"] == "target"
    expected = server_vectors(live_server.target, sample)
    assert_matches(read_output(out), [f"s.txt:{i}" for i in range(1, 201)], expected)

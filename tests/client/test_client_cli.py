"""The client's CLI against a live server: its outputs parse, bulk files resume and land whole."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from bertserve.client import Client
from bertserve.client.bulk import embed_file

CLI = [sys.executable, "-m", "bertserve.client.cli"]


def bertserve(*args: str, target: str, binary: bool = False) -> subprocess.CompletedProcess:
    run = subprocess.run(
        [*CLI, *args, "--target", target], capture_output=True, text=not binary, timeout=300
    )
    assert run.returncode == 0, run.stderr
    return run


def test_embed_json_and_npy(live_server):
    target = live_server.target
    data = json.loads(bertserve("embed", "I love Paris", "hello", target=target).stdout)
    assert data["lengths"] == [5, 3]
    vectors = np.asarray(data["sentence_embedding"], dtype=np.float32)
    with Client(target) as client:
        np.testing.assert_allclose(
            vectors, client.embed(["I love Paris", "hello"]).sentence_embedding, atol=3e-5
        )
        top = client.info().num_layers
    layers = json.loads(
        bertserve(
            "embed", "I love Paris", "--layers", "-1,-2", "--pooling", "cls", target=target
        ).stdout
    )
    assert sorted(layers["hidden_states"]) == [str(top - 1), str(top)]
    assert np.asarray(layers["hidden_states"][str(top)][0]).shape[0] == 5
    npy = bertserve(
        "embed", "I love Paris", "--format", "npy", "--normalize", target=target, binary=True
    )
    array = np.load(io.BytesIO(npy.stdout))
    assert array.shape == vectors[:1].shape
    np.testing.assert_allclose(np.linalg.norm(array, axis=1), 1.0, rtol=1e-5)


def test_tokenize_prints_the_walk_through(live_server):
    out = bertserve("tokenize", "I love Paris", "--pad-to", "7", target=live_server.target).stdout
    assert out.splitlines() == [
        'sentence        "I love Paris"',
        "tokens          [CLS] i love paris [SEP] [PAD] [PAD]",
        "attention_mask  1 1 1 1 1 0 0",
        "token_ids       101 1045 2293 3000 102 0 0",
        "token_type_ids  0 0 0 0 0 0 0",
    ]


def test_info_models_health(live_server):
    target = live_server.target
    info = json.loads(bertserve("info", "--format", "json", target=target).stdout)
    assert info["num_layers"] >= 1 and info["variants"]
    models = json.loads(bertserve("models", "--format", "json", target=target).stdout)
    assert info["name"] in [m["name"] for m in models]
    assert bertserve("health", target=target).stdout.strip() == "SERVING"


def test_bad_arguments_fail_clearly(live_server):
    run = subprocess.run(
        [*CLI, "embed", "x", "--layers", "99", "--target", live_server.target],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and "layer 99 out of range" in run.stderr


class Interrupted(Exception):
    pass


class StopsAfter:
    """A real client whose embed_stream is cut off after ``batches`` answers (a crash)."""

    def __init__(self, client: Client, batches: int) -> None:
        self.client, self.batches = client, batches

    def embed_stream(self, *args, **kwargs):
        for index, result in enumerate(self.client.embed_stream(*args, **kwargs)):
            if index == self.batches:
                raise Interrupted
            yield result


@pytest.mark.parametrize("suffix", [".txt", ".jsonl"])
def test_bulk_file_resumes_and_writes_atomically(live_server, tmp_path, suffix):
    texts = [f"line {i}: " + "some words " * (i % 5) for i in range(203)]
    corpus = tmp_path / f"corpus{suffix}"
    if suffix == ".txt":
        corpus.write_text("\n".join(texts) + "\n")
    else:
        corpus.write_text(
            "".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(texts))
        )
    output = tmp_path / "vectors.npy"
    with Client(live_server.target, timeout=120) as client:
        with pytest.raises(Interrupted):
            embed_file(
                StopsAfter(client, 3), corpus, output, batch_size=16, read_ahead=32, progress=False
            )
        assert not output.exists()
        progress = json.loads((tmp_path / "vectors.npy.progress.json").read_text())
        assert progress["rows"] == 32  # the first window of 32; the second had half its answers
        expected = np.concatenate(
            [client.embed(texts[i : i + 50]).sentence_embedding for i in range(0, len(texts), 50)]
        )
    # the rerun continues from row 32 and finishes the file
    run = subprocess.run(
        [
            *CLI,
            "embed",
            "--input",
            str(corpus),
            "--output",
            str(output),
            "--batch-size",
            "16",
            "--target",
            live_server.target,
            "--progress",  # stderr is a pipe here: shown only when asked
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stderr.splitlines() if " rows/s " in line]
    # the resumed 32 rows count as done, the first figure comes with the first batch of 16
    assert lines[0].startswith("48/203 rows (23.6%)  "), run.stderr
    assert lines[-1].startswith("203/203 rows (100.0%)") and lines[-1].endswith("ETA 0s")
    vectors = np.load(output)
    assert vectors.shape == expected.shape
    np.testing.assert_allclose(vectors, expected, atol=3e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([corpus.name, "vectors.npy"])


def test_bulk_parquet(live_server, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("I love Paris\nhello\n")
    output = tmp_path / "vectors.parquet"
    bertserve("embed", "--input", str(corpus), "--output", str(output), target=live_server.target)
    table = pq.read_table(output)
    assert table.column("row").to_pylist() == [0, 1]
    vectors = np.asarray(table.column("embedding").to_pylist(), dtype=np.float32)
    with Client(live_server.target) as client:
        expected = client.embed(["I love Paris", "hello"]).sentence_embedding
    np.testing.assert_allclose(vectors, expected, atol=3e-5)


def test_bulk_interrupted_with_ctrl_c_continues_on_rerun(live_server, tmp_path):
    import signal
    import time

    rows = 3000
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"text number {i} of the corpus\n" for i in range(rows)))
    output = tmp_path / "out.npy"
    sidecar = tmp_path / "out.npy.progress.json"
    command = [*CLI, "embed", "--input", str(corpus), "--output", str(output)]
    command += ["--batch-size", "4", "--window", "2", "--read-ahead", "40"]
    command += ["--target", live_server.target]
    # Ctrl-C's default action, even where this test runs as a background job of a
    # non-interactive shell, which starts its children with SIGINT ignored
    first = subprocess.Popen(
        command,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while not (sidecar.is_file() and json.loads(sidecar.read_text())["rows"] >= 40):
        assert first.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    first.send_signal(signal.SIGINT)
    _, stderr = first.communicate(timeout=60)
    assert first.returncode == 130, stderr
    assert "run the same command again" in stderr
    done = json.loads(sidecar.read_text())["rows"]
    assert 40 <= done < rows and not output.exists()
    second = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    assert f"wrote {rows} vectors to {output}" in second.stderr
    vectors = np.load(output)
    with Client(live_server.target) as client:
        picks = [0, done - 1, done, rows - 1]
        expected = client.embed(
            [f"text number {i} of the corpus" for i in picks]
        ).sentence_embedding
    np.testing.assert_allclose(vectors[picks], expected, atol=3e-5)
    assert not sidecar.exists()

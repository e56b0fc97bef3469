"""The bulk path: files and lists of texts sent length-sorted, answered in input order."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import numpy as np
import pytest
from bertserve.client import AsyncClient, Client
from bertserve.client.bulk import count_texts, embed_file, read_texts, sorted_batches
from bertserve.client.tokenizer import load_tokenizer
from servers import start_server

CLI = [sys.executable, "-m", "bertserve.client.cli"]
# Real sentences of very different lengths, shuffled: unsorted batches of these pad a lot.
SENTENCES = [
    "Yes.",
    "I love Paris in the springtime.",
    "The committee postponed its decision until the auditors had finished their review of "
    "the accounts, which was not expected before the end of the financial year.",
    "Rain again.",
    "She opened the window, looked at the empty street below and wondered, not for the "
    "first time that week, whether the letter would ever arrive.",
    "Good morning!",
    "Prices rose sharply.",
    "After three days of talks the two delegations agreed on a ceasefire along the river, "
    "although both sides warned that the agreement remained fragile and that any incident "
    "could bring the fighting back.",
]


def corpus(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.choice(SENTENCES)} ({i})" for i in range(count)]


class Recording:
    """A real client whose embed_stream records each answer's timing, and can stop after
    ``stop_after`` answers like a crash."""

    def __init__(self, client: Client, stop_after: int | None = None) -> None:
        self.client, self.stop_after, self.results = client, stop_after, []

    def embed_stream(self, *args, **kwargs):
        for index, result in enumerate(self.client.embed_stream(*args, **kwargs)):
            if index == self.stop_after:
                raise KeyboardInterrupt
            self.results.append(result)
            yield result


def interrupt(target: str, path, output, *, stop_after: int, read_ahead: int = 16) -> None:
    """A bulk run of ``path`` stopped like a crash after ``stop_after`` answers."""
    with Client(target, timeout=120) as client:
        with pytest.raises(KeyboardInterrupt):
            embed_file(
                Recording(client, stop_after=stop_after),
                path,
                output,
                batch_size=8,
                read_ahead=read_ahead,
                progress=False,
            )


def test_sorted_batches_group_lengths_and_keep_every_index():
    lengths = [5, 1, 9, 1, 5, 3]
    batches = sorted_batches(lengths, 2)
    assert batches == [[1, 3], [5, 0], [4, 2]]
    assert sorted(i for b in batches for i in b) == list(range(6))


def test_lines_end_at_newlines_only(tmp_path):
    path = tmp_path / "lines.txt"
    path.write_bytes(b"a\rb\r\n\nlast without newline")
    assert list(read_texts(path)) == ["a\rb", "", "last without newline"]
    assert count_texts(path) == 3


def test_a_shuffled_file_is_embedded_in_order_with_little_padding(live_server, tmp_path):
    texts = corpus(300)
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(texts) + "\n")
    output = tmp_path / "out.npy"
    with Client(live_server.target, timeout=120) as client:
        recording = Recording(client)
        done = embed_file(recording, path, output, batch_size=16, read_ahead=128, progress=False)
        expected = client.embed(texts, pooling="mean").sentence_embedding
    assert done.rows == 300 and done.skipped == 0
    np.testing.assert_allclose(np.load(output), expected, atol=3e-5)
    computed = sum(r.timing.computed_tokens for r in recording.results)
    real = sum(r.timing.tokens for r in recording.results)
    # sent in file order, batches of 16 of these would compute about twice the real tokens
    assert computed / real < 1.15


def test_resume_keeps_order_and_blank_lines_get_nan_rows(live_server, tmp_path):
    texts = corpus(200, seed=1)
    texts[5] = texts[77] = "   "
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(texts) + "\n")
    output = tmp_path / "out.npy"
    sidecar = tmp_path / "out.npy.progress.json"
    interrupt(live_server.target, path, output, stop_after=7, read_ahead=48)
    done = json.loads(sidecar.read_text())["rows"]
    assert done % 48 == 0 and 0 < done < 200
    with Client(live_server.target, timeout=120) as client:
        embed_file(client, path, output, batch_size=8, read_ahead=48, progress=False)
        kept = [i for i, t in enumerate(texts) if t.strip()]
        expected = client.embed([texts[i] for i in kept]).sentence_embedding
    vectors = np.load(output)
    assert vectors.shape == (200, 384)
    assert np.isnan(vectors[[5, 77]]).all()
    np.testing.assert_allclose(vectors[kept], expected, atol=3e-5)
    assert not sidecar.exists()


def test_resume_refuses_rows_of_another_model(live_server, model_repo, tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(corpus(100, seed=2)) + "\n")
    output = tmp_path / "out.npy"
    interrupt(live_server.target, path, output, stop_after=3)
    # the same job against a server that answers with another default variant
    other = start_server(model_repo, "--variant", "minilm=int8", metrics=False)
    try:
        with Client(other.target, timeout=120) as client:
            with pytest.raises(
                ValueError, match="holds rows of minilm/fp32-opt .* now answers with minilm/int8"
            ):
                embed_file(client, path, output, batch_size=8, read_ahead=16, progress=False)
    finally:
        other.stop()


def test_a_file_of_blank_lines_says_so(live_server, tmp_path):
    path = tmp_path / "blank.txt"
    path.write_text("\n \n\n")
    with Client(live_server.target) as client:
        with pytest.raises(ValueError, match="every text is blank"):
            embed_file(client, path, tmp_path / "out.npy", progress=False)


def test_embed_many_answers_in_order(live_server):
    texts = corpus(150, seed=3)
    with Client(live_server.target, timeout=120) as client:
        vectors = client.embed_many(texts, batch_size=16)
        expected = client.embed(texts).sentence_embedding
    np.testing.assert_allclose(vectors, expected, atol=3e-5)


async def test_async_embed_many_answers_in_order(live_server):
    texts = corpus(150, seed=4)
    async with AsyncClient(live_server.target, timeout=120) as client:
        vectors = await client.embed_many(texts, batch_size=16, normalize=True)
        expected = (await client.embed(texts, normalize=True)).sentence_embedding
    np.testing.assert_allclose(vectors, expected, atol=3e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_the_cli_can_sort_by_token_count_with_the_models_tokenizer(live_server, tmp_path):
    texts = corpus(120, seed=5)
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(texts) + "\n")
    output = tmp_path / "out.npy"
    folder = live_server.repo / "minilm" / "fp32-opt"
    run = subprocess.run(
        [*CLI, "embed", "--input", str(path), "--output", str(output), "--tokenizer", str(folder)]
        + ["--batch-size", "8", "--target", live_server.target, "--no-progress"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    with Client(live_server.target, timeout=120) as client:
        expected = client.embed(texts).sentence_embedding
    np.testing.assert_allclose(np.load(output), expected, atol=3e-5)
    tokenizer = load_tokenizer(folder)
    assert tokenizer.lengths(["I love Paris"]) == [5]


def cli_embed(target: str, path, output, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, "embed", "--input", str(path), "--output", str(output), "--target", target]
        + ["--batch-size", "8", "--no-progress", *extra],
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture
def interrupted(live_server, tmp_path):
    """A bulk run stopped after some windows: (input, output, .partial, .progress.json)."""
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(corpus(120, seed=6)) + "\n")
    output = tmp_path / "out.npy"
    interrupt(live_server.target, path, output, stop_after=5)
    partial = tmp_path / "out.npy.partial"
    sidecar = tmp_path / "out.npy.progress.json"
    assert json.loads(sidecar.read_text())["rows"] == 32  # two windows of 16
    return path, output, partial, sidecar


def refused(run: subprocess.CompletedProcess, message: str) -> None:
    assert run.returncode == 2, run.stderr
    assert message in run.stderr and "Traceback" not in run.stderr


def test_a_truncated_partial_is_refused_not_padded(live_server, interrupted):
    path, output, partial, sidecar = interrupted
    with partial.open("r+b") as data:
        data.truncate(20 * 384 * 4 + 100)  # 20 rows and a bit, of the 32 recorded
    run = cli_embed(live_server.target, path, output)
    refused(run, f"{partial} is damaged: {20 * 384 * 4 + 100} bytes, but")
    assert "records 32 rows of 384 float32" in run.stderr
    assert partial.stat().st_size == 20 * 384 * 4 + 100 and not output.exists()


def test_rows_that_do_not_match_their_checksum_are_refused(live_server, interrupted):
    path, output, partial, sidecar = interrupted
    rows = np.fromfile(partial, dtype=np.float32).reshape(-1, 384)
    rows[30, 7] += 1.0  # in the last window written (rows 16..31)
    rows.tofile(partial)
    refused(
        cli_embed(live_server.target, path, output),
        "its rows 16..31 do not match the checksum in out.npy.progress.json",
    )
    assert not output.exists()


def test_rows_appended_after_the_record_are_computed_again(live_server, interrupted):
    path, output, partial, _ = interrupted
    with partial.open("ab") as data:
        data.write(b"\0" * (3 * 384 * 4 + 5))  # a crash between the rows and their record
    run = cli_embed(live_server.target, path, output)
    assert run.returncode == 0, run.stderr
    with Client(live_server.target, timeout=120) as client:
        expected = client.embed(path.read_text().splitlines()).sentence_embedding
    np.testing.assert_allclose(np.load(output), expected, atol=3e-5)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"job": "', "not a progress record (Unterminated string"),
        (b"\xe9{}", "not a progress record ('utf-8' codec can't decode"),
        (b"[1, 2]", "not a progress record (not a JSON object)"),
        (b'{"rows": "32"}', "missing or wrong job, rows, model"),
    ],
)
def test_a_malformed_progress_record_gets_a_clear_message(
    live_server, interrupted, content, message
):
    path, output, partial, sidecar = interrupted
    sidecar.write_bytes(content)
    run = cli_embed(live_server.target, path, output)
    refused(run, message)
    assert "delete out.npy.progress.json and out.npy.partial to start over" in run.stderr
    assert not output.exists() and partial.exists()


def test_a_line_that_is_not_utf8_is_named_or_skipped(live_server, tmp_path):
    texts = [f"line {i}" for i in range(1, 15_001)]
    path = tmp_path / "corpus.txt"
    bad = b"caf\xe9 au lait"  # latin-1, not UTF-8
    path.write_bytes("\n".join(texts).encode() + b"\n" + bad + b"\nthe end\n")
    offset = len("\n".join(texts).encode()) + 1 + 3
    output = tmp_path / "out.npy"
    run = cli_embed(live_server.target, path, output)
    refused(run, f"{path}:15001: not UTF-8 at byte {offset} of the file (0xe9)")
    assert not any(tmp_path.glob("out.npy*"))  # found before any work
    # skipped: a row of NaN keeps every later row on its line, and the count is reported
    small = tmp_path / "small.txt"
    small.write_bytes(b"first\n" + bad + b"\nthird\n\xff\n")
    run = cli_embed(live_server.target, small, output, "--errors", "skip")
    assert run.returncode == 0, run.stderr
    assert "wrote 4 vectors" in run.stderr and "(2 lines not UTF-8: rows of NaN)" in run.stderr
    vectors = np.load(output)
    assert np.isnan(vectors[[1, 3]]).all() and not np.isnan(vectors[[0, 2]]).any()
    with Client(live_server.target) as client:
        expected = client.embed(["first", "third"]).sentence_embedding
    np.testing.assert_allclose(vectors[[0, 2]], expected, atol=3e-5)

"""Long documents from every client: the Python clients (blocking, asyncio, streamed), the CLI,
Node, the dataset job (in-process and over servers) and the bulk CLI give a long real text the
same chunked, pooled and late-chunked vectors as one direct ``Client.embed`` call."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bertserve.client import AsyncClient, Client, EmbedOptions

CLI = [sys.executable, "-m", "bertserve.client.cli"]
ATOL = 1e-5  # windows batched with other windows: padding may move the last bits


def _topics() -> list[str]:
    """Long real texts: sections of CPython's documentation, shipped with Python itself."""
    from pydoc_data.topics import topics

    return [topics["typesseq"], topics["attribute-access"]]


TEXTS = _topics()
CHUNK = {"long_text": "chunk", "chunk_tokens": 128, "chunk_overlap": 16, "pooling": "mean"}
CHUNK_FLAGS = ["--long-text", "chunk", "--chunk-tokens", "128", "--chunk-overlap", "16"]


def close(a: np.ndarray, b: np.ndarray, atol: float = ATOL) -> None:
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    assert a.shape == b.shape, (a.shape, b.shape)
    worst = float(np.max(np.abs(a - b))) if a.size else 0.0
    assert worst <= atol, f"max |delta| {worst} over {atol}"


@pytest.fixture(scope="module")
def direct(live_server):
    """One direct Client.embed per question: chunked (with its windows), max-pooled, and
    late-chunked by spans and by sentences."""
    half = len(TEXTS[0]) // 2
    spans = [(0, 0, 200), (0, half, half + 300), (1, 10, 500)]
    with Client(live_server.target, timeout=300) as client:
        return {
            "chunked": client.embed(TEXTS, return_chunks=True, **CHUNK),
            "max": client.embed(TEXTS, **{**CHUNK, "chunk_pooling": "max"}),
            "spans": client.embed(TEXTS, spans=spans, **CHUNK),
            "sentences": client.embed(TEXTS, split="sentences", **CHUNK),
            "span_list": spans,
            "info": client.info(),
        }


def test_the_direct_call_chunks_the_whole_text(direct):
    chunked, info = direct["chunked"], direct["info"]
    assert info.chunk_tokens == info.max_length - 2 and info.chunk_overlap == info.chunk_tokens // 8
    assert (chunked.lengths > info.max_length).all() and (chunked.truncated == 0).all()
    spans = chunked.chunk_spans
    assert spans.dtype == np.int32 and len(spans) == len(chunked.chunk_embeddings)
    for text_index, text in enumerate(TEXTS):
        own = spans[spans[:, 0] == text_index]
        assert len(own) > 5 and own[0, 1] <= 3 and own[-1, 2] >= len(text.rstrip()) - 3
        assert (own[1:, 1] < own[:-1, 2]).all(), "consecutive windows share tokens"
    assert not np.allclose(direct["max"].sentence_embedding, chunked.sentence_embedding)
    assert direct["spans"].span_offsets.tolist() == [list(s) for s in direct["span_list"]]
    assert len(direct["sentences"].span_offsets) > 20


async def test_python_clients_give_the_direct_vectors(direct, live_server):
    chunked = direct["chunked"]
    options = EmbedOptions.parse(return_chunks=True, **CHUNK)
    with Client(live_server.target, timeout=300) as client:
        again = client.embed(TEXTS, options=options)
        many = client.embed_many(TEXTS, batch_size=1, **CHUNK)  # EmbedStream, one text a batch
        streamed = list(client.embed_stream([[t] for t in TEXTS], split="sentences", **CHUNK))
    close(again.sentence_embedding, chunked.sentence_embedding)
    close(again.chunk_embeddings, chunked.chunk_embeddings)
    assert again.chunk_spans.tolist() == chunked.chunk_spans.tolist()
    close(many, chunked.sentence_embedding)
    sentences = direct["sentences"]
    close(np.concatenate([r.span_embeddings for r in streamed]), sentences.span_embeddings)
    first = (sentences.span_offsets[:, 0] == 0).sum()
    assert streamed[1].span_offsets[:, 1:].tolist() == sentences.span_offsets[first:, 1:].tolist()
    async with AsyncClient(live_server.target, timeout=300) as client:
        result = await client.embed(TEXTS, return_chunks=True, **CHUNK)
        late = await client.embed(TEXTS, spans=direct["span_list"], **CHUNK)
    close(result.sentence_embedding, chunked.sentence_embedding)
    close(result.chunk_embeddings, chunked.chunk_embeddings)
    close(late.span_embeddings, direct["spans"].span_embeddings)
    assert late.span_offsets.tolist() == direct["spans"].span_offsets.tolist()


def test_the_cli_gives_the_direct_vectors(direct, live_server, tmp_path):
    target = ["--target", live_server.target, "--timeout", "300", "--pooling", "mean"]
    out = tmp_path / "chunked.json"
    done = subprocess.run(
        [*CLI, "embed", *TEXTS, *target, *CHUNK_FLAGS, "--return-chunks", "-o", str(out)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text())
    chunked = direct["chunked"]
    assert data["lengths"] == chunked.lengths.tolist()
    close(np.array(data["sentence_embedding"]), chunked.sentence_embedding)
    close(np.array(data["chunk_embeddings"]), chunked.chunk_embeddings)
    assert data["chunk_spans"] == chunked.chunk_spans.tolist()
    spans = [f"{t}:{s}:{e}" for t, s, e in direct["span_list"]]
    npz = tmp_path / "late.npz"
    done = subprocess.run(
        [*CLI, "embed", *TEXTS, *target, *CHUNK_FLAGS, "--format", "npz", "-o", str(npz)]
        + [arg for span in spans for arg in ("--span", span)],
        capture_output=True,
    )
    assert done.returncode == 0, done.stderr
    with np.load(npz) as late:
        close(late["span_embeddings"], direct["spans"].span_embeddings)
        assert late["span_offsets"].tolist() == direct["spans"].span_offsets.tolist()
    bad = subprocess.run(
        [*CLI, "embed", TEXTS[0], *target, "--long-text", "chunk", "--chunk-tokens", "9999"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "INVALID_ARGUMENT" in bad.stderr, bad.stderr


def test_node_gives_the_direct_vectors(node_tests, live_server, tmp_path):
    text = tmp_path / "doc.txt"
    text.write_text(TEXTS[0], encoding="utf-8")
    out = tmp_path / "node.json"
    node_tests(
        "test/long_text.test.js",
        BERTSERVE_TARGET=live_server.target,
        BERTSERVE_LONG_TEXT_FILE=str(text),
        BERTSERVE_NODE_LONG_OUT=str(out),
    )
    node = json.loads(out.read_text())

    def floats(data: str, width: int = 384) -> np.ndarray:
        return np.frombuffer(base64.b64decode(data), dtype="<f4").reshape(-1, width)

    half = len(TEXTS[0]) // 2
    spans = [(0, 200), (half, half + 300)]
    unpooled = {**CHUNK, "pooling": "none"}
    with Client(live_server.target, timeout=300) as client:
        chunked = client.embed(TEXTS[0], return_chunks=True, **CHUNK)
        late = client.embed(TEXTS[0], spans=spans, **unpooled)
        sentences = client.embed(TEXTS[0], split="sentences", **unpooled)
    assert node["chunked"]["lengths"] == chunked.lengths.tolist()
    close(floats(node["chunked"]["sentence"]), chunked.sentence_embedding)
    close(floats(node["chunked"]["chunks"]), chunked.chunk_embeddings)
    assert node["chunked"]["chunkSpans"] == chunked.chunk_spans.tolist()
    close(floats(node["late"]["spans"]), late.span_embeddings)
    assert node["late"]["spanOffsets"] == late.span_offsets.tolist()
    close(floats(node["sentences"]["spans"]), sentences.span_embeddings)
    assert node["sentences"]["spanOffsets"] == sentences.span_offsets.tolist()


@pytest.fixture(scope="module")
def docs_jsonl(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("docs") / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS), encoding="utf-8")
    return path


@pytest.mark.parametrize("engine", ["local", "servers"])
def test_the_dataset_job_gives_the_direct_vectors(
    engine, direct, docs_jsonl, model_repo, live_server, tmp_path
):
    from bertserve.dataset import FeatureOptions, Job, read_output, run

    place = {"repo": str(model_repo)} if engine == "local" else {"target": live_server.target}
    for chunk_pooling in ("mean", "max"):
        options = FeatureOptions(
            pooling="mean",
            long_text="chunk",
            chunk_tokens=128,
            chunk_overlap=16,
            chunk_pooling=chunk_pooling,
        )
        out = tmp_path / chunk_pooling
        run(
            Job(
                input=str(docs_jsonl),
                output=str(out),
                model="minilm",
                variant="fp32-opt",
                options=options,
                progress=False,
                **place,
            )
        )
        table = read_output(out).sort_by("id")
        assert table.column("id").to_pylist() == ["docs.jsonl:1", "docs.jsonl:2"]
        flat = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        reference = direct["chunked" if chunk_pooling == "mean" else "max"].sentence_embedding
        close(np.asarray(flat).reshape(len(TEXTS), -1), reference)
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["job"]["options"]["long_text"] == "chunk"


def test_the_bulk_cli_gives_the_direct_vectors(direct, docs_jsonl, live_server, tmp_path):
    out = tmp_path / "docs.npy"
    done = subprocess.run(
        [*CLI, "embed", "--input", str(docs_jsonl), "--output", str(out), *CHUNK_FLAGS]
        + ["--pooling", "mean", "--target", live_server.target, "--no-progress"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    close(np.load(out), direct["chunked"].sentence_embedding)
    # without chunking the same file is refused: each text is over the window
    refused = subprocess.run(
        [*CLI, "embed", "--input", str(docs_jsonl), "--output", str(tmp_path / "cut.npy")]
        + ["--long-text", "error", "--target", live_server.target, "--no-progress"],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2 and "INVALID_ARGUMENT" in refused.stderr, refused.stderr

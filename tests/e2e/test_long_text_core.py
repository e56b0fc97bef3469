"""Long documents through the protocol-free core with the real model in this process: CHUNK
against TRUNCATE, each window against embedding its tokens alone, the stitched rows, pooling
across windows, late-chunking spans, the refusals, and the limits of a request that expands
into many windows (answer size, deadline, cancellation, a small request served meanwhile)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from pydoc_data.topics import topics

import numpy as np
import pytest
from bertserve.server.config import BatchSettings, ServerConfig
from bertserve.server.core.chunking import plan_windows, sentence_spans
from bertserve.server.core.engine import Engine, answer_limit
from bertserve.server.core.request import Options, Request, Texts, Tokens, TokenSequence
from bertserve.server.errors import AnswerTooLarge, DeadlineExceeded, InvalidArgument
from bertserve.server.models import ModelRegistry

# Real prose: CPython's documentation topics, shipped with Python itself.
PROSE = topics["exceptions"]  # about 440 tokens: 18 windows of 32 overlapping by 7
LONG_PROSE = topics["execmodel"]  # about 2,200 tokens: over 100 windows of 16
MID_PROSE = PROSE + "\n\n" + LONG_PROSE[:1500]  # over 512 tokens, short enough to count all
TOLERANCE = 1e-5


async def any_size(size: int) -> None:
    """Admits any answer (an in-process caller has no message limit)."""


@pytest.fixture(scope="module")
async def core(model_repo: Path):
    """An Engine on the exported MiniLM (fp32), batches of at most 8 sequences, and its
    loaded variant."""
    config = ServerConfig(
        repo=model_repo,
        default_model="minilm",
        variants={"minilm": "fp32"},
        intra_op_threads=1,
        warmup=False,
        batch=BatchSettings(max_batch_size=8),
        log_json=False,
    ).validate()
    registry = ModelRegistry(config)
    engine = Engine(registry, max_request_sequences=4096)
    variant = await engine.variant("minilm")
    yield engine, variant
    await registry.close(timeout=5)


async def embed(core, inputs, admit=any_size, timeout=None, **options):
    engine, variant = core
    inputs = Texts(inputs) if isinstance(inputs, list) else inputs
    result, _, _ = await engine.embed(
        Request(inputs, Options(**options)), timeout, admit, variant=variant
    )
    return result


async def refused(core, inputs, **options) -> str:
    with pytest.raises(InvalidArgument) as caught:
        await embed(core, inputs, **options)
    return str(caught.value)


def content(variant, text: str) -> tuple[np.ndarray, np.ndarray, int, int]:
    """The text's content token ids and their [start, end) code points, [CLS] and [SEP]."""
    encoding = variant.tokenizer.encode_whole([text])[0]
    ids = np.asarray(encoding.ids)
    return ids[1:-1], np.asarray(encoding.offsets)[1:-1], int(ids[0]), int(ids[-1])


def most_context(windows: np.ndarray, token: int) -> int:
    """The window a token's rows come from, by brute force: the most context on both sides,
    the earlier on ties."""
    scores = [min(token - s, e - 1 - token) if s <= token < e else -1 for s, e in windows.tolist()]
    return scores.index(max(scores))


async def test_a_text_that_fits_answers_exactly_as_truncate(core):
    texts = ["I love Paris", "A short text, well inside one window."]
    options = dict(token_embeddings=True, pooling="mean", layers=(2,), normalize=True)
    chunked = await embed(core, texts, long_text="chunk", chunk_tokens=32, **options)
    cut = await embed(core, texts, long_text="truncate", **options)
    assert chunked.outputs.keys() == cut.outputs.keys()
    for name, array in cut.outputs.items():
        assert chunked.outputs[name].tobytes() == array.tobytes(), name
    assert chunked.lengths == cut.lengths and chunked.truncated == [0, 0]


async def test_each_window_embeds_as_its_tokens_alone_and_the_text_is_stitched(core):
    _, variant = core
    ids, offsets, cls, sep = content(variant, PROSE)
    windows = plan_windows(len(ids), 32, 7)  # odd: some tokens tie between two windows
    assert len(windows) > 2
    options = dict(token_embeddings=True, pooling="mean", layers=(3,))
    result = await embed(
        core, [PROSE], long_text="chunk", chunk_tokens=32, chunk_overlap=7, return_chunks=True,
        **options,
    )  # fmt: skip
    alone = await embed(
        core,
        Tokens([TokenSequence([cls, *ids[s:e], sep]) for s, e in windows.tolist()]),
        **options,
    )
    # one vector per window, each as that window's tokens embedded alone
    chunks = result.outputs["chunk_embeddings"]
    assert chunks.shape == (len(windows), 384)
    assert np.abs(chunks - alone.outputs["sentence_embedding"]).max() <= TOLERANCE
    spans = result.outputs["chunk_spans"]
    assert spans.dtype == np.int32
    for (text, start, end), (s, e) in zip(spans.tolist(), windows.tolist(), strict=True):
        assert (text, start, end) == (0, offsets[s, 0], offsets[e - 1, 1])
    assert PROSE[spans[0, 1] : spans[0, 2]].lower().startswith("exceptions")
    # the sentence vector: the windows' mean weighted by their content tokens
    weights = (windows[:, 1] - windows[:, 0])[:, None]
    pooled = (alone.outputs["sentence_embedding"] * weights).sum(0) / weights.sum()
    assert np.abs(result.outputs["sentence_embedding"][0] - pooled).max() <= TOLERANCE
    # one row per token of the whole text, each the chosen window's row
    assert result.lengths == [len(ids) + 2] and result.truncated == [0]
    starts = np.cumsum([0] + [e - s + 2 for s, e in windows.tolist()])
    for name in ("token_embeddings", "hidden_states.3"):
        stitched, rows = result.outputs[name], alone.outputs[name]
        assert stitched.shape == (len(ids) + 2, 384)
        assert np.abs(stitched[0] - rows[0]).max() <= TOLERANCE  # [CLS] of the first window
        assert np.abs(stitched[-1] - rows[-1]).max() <= TOLERANCE  # [SEP] of the last
        for token in range(len(ids)):
            window = most_context(windows, token)
            row = starts[window] + 1 + token - windows[window, 0]
            assert np.abs(stitched[token + 1] - rows[row]).max() <= TOLERANCE


@pytest.mark.parametrize("pooling", ["max", "first"])
async def test_the_sentence_vector_pools_the_windows_as_documented(core, pooling):
    _, variant = core
    ids, _, cls, sep = content(variant, PROSE)
    windows = plan_windows(len(ids), 64, 16)
    result = await embed(
        core, [PROSE], long_text="chunk", chunk_tokens=64, chunk_overlap=16,
        chunk_pooling=pooling, return_chunks=True, pooling="mean", normalize=True,
    )  # fmt: skip
    alone = await embed(
        core, Tokens([TokenSequence([cls, *ids[s:e], sep]) for s, e in windows.tolist()]),
        pooling="mean",
    )  # fmt: skip
    vectors = alone.outputs["sentence_embedding"]
    pooled = vectors.max(axis=0) if pooling == "max" else vectors[0]
    expected = pooled / np.linalg.norm(pooled)  # normalized after pooling, not before
    assert np.abs(result.outputs["sentence_embedding"][0] - expected).max() <= TOLERANCE
    units = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    assert np.abs(result.outputs["chunk_embeddings"] - units).max() <= TOLERANCE


async def test_span_vectors_are_the_means_of_the_stitched_rows_they_cover(core):
    _, variant = core
    _, offsets, _, _ = content(variant, PROSE)
    second = "안녕하세요, 세계! Emoji 😀 and café ☕ here."
    spans = ((0, 0, 10), (1, 0, 5), (0, 10, 400), (1, 13, 22), (0, 1500, len(PROSE)))
    result = await embed(
        core, [PROSE, second], long_text="chunk", chunk_tokens=32, token_embeddings=True,
        pooling="none", spans=spans,
    )  # fmt: skip
    assert result.outputs["span_offsets"].tolist() == [list(span) for span in spans]
    assert result.outputs["span_offsets"].dtype == np.int32
    stitched = np.split(result.outputs["token_embeddings"], np.cumsum(result.lengths)[:-1])
    text_offsets = [offsets, content(variant, second)[1]]
    for vector, (text, start, end) in zip(result.outputs["span_embeddings"], spans, strict=True):
        found = text_offsets[text]
        covered = np.flatnonzero((found[:, 0] < end) & (found[:, 1] > start))
        assert covered.size
        expected = stitched[text][1 + covered].mean(axis=0)
        assert np.abs(vector - expected).max() <= TOLERANCE
    # normalized when asked; and without CHUNK on texts that fit, the same vectors
    unit = await embed(
        core, [second], spans=((0, 0, 5), (0, 13, 22)), pooling="none", normalize=True
    )
    chunked = result.outputs["span_embeddings"][[1, 3]]
    expected = chunked / np.linalg.norm(chunked, axis=1, keepdims=True)
    assert np.abs(unit.outputs["span_embeddings"] - expected).max() <= TOLERANCE
    assert "token_embeddings" not in unit.outputs


async def test_split_sentences_makes_one_span_per_sentence(core):
    texts = [PROSE, "One sentence. Two sentences!\nThree."]
    result = await embed(core, texts, long_text="chunk", chunk_tokens=64, split="sentences")
    expected = [[t, s, e] for t, text in enumerate(texts) for s, e in sentence_spans(text)]
    assert result.outputs["span_offsets"].tolist() == expected
    pieces = [texts[t][s:e] for t, s, e in expected[-3:]]
    assert pieces == ["One sentence.", "Two sentences!", "Three."]
    assert result.outputs["span_embeddings"].shape == (len(expected), 384)
    assert "sentence_embedding" in result.outputs  # the default pooling still answers


async def test_bad_long_text_requests_are_invalid_argument_with_what_is_allowed(core):
    text = "Short text here."
    message = await refused(core, [text], spans=((0, 5, 40),))
    assert message.startswith("spans[0].end: [5, 40) of texts[0] (16 characters)")
    assert "allowed 0 <= start < end <= 16" in message
    message = await refused(core, [text], spans=((0, 0, 9), (0, 6, 12)))
    assert message.startswith("spans[1].start=6: before the end (9) of spans[0]")
    assert "spans[0].end" in await refused(core, [text], spans=((0, 4, 4),))
    assert "spans[0].text=1: no such text; allowed 0..0" in await refused(
        core, [text], spans=((1, 0, 1),)
    )
    message = await refused(core, ["Short  text"], spans=((0, 5, 7),))  # only whitespace
    assert message.startswith("spans[0]: [5, 7) of texts[0] covers no token")
    message = await refused(core, [text], long_text="chunk", chunk_tokens=16, chunk_overlap=16)
    assert message == "chunk_overlap=16: allowed 0..15 (less than chunk_tokens=16)"
    message = await refused(core, [text], long_text="chunk", chunk_tokens=511)
    assert message.startswith("chunk_tokens=511: allowed 1..510")
    sequences = Tokens([TokenSequence([101, 2023, 102])])
    assert "allowed: texts only" in await refused(core, sequences, long_text="chunk")
    assert "allowed: texts only" in await refused(core, sequences, spans=((0, 0, 1),))
    pairs = Texts([text], [text])
    assert "without pairs" in await refused(core, pairs, long_text="chunk")
    # ERROR: the text's length and the limit
    message = await refused(core, [MID_PROSE], long_text="error")
    tokens = len(content(core[1], MID_PROSE)[0]) + 2
    assert message.startswith(f"texts[0]: {tokens} tokens, longer than the model's limit of 512")
    assert "long_text to truncate or chunk" in message
    # TRUNCATE: a span past the kept tokens covers none of them
    end = len(MID_PROSE)
    message = await refused(core, [MID_PROSE], long_text="truncate", spans=((0, end - 50, end),))
    assert "covers no token" in message
    cut = await embed(core, [MID_PROSE], long_text="truncate", spans=((0, 0, 50),))
    assert cut.truncated == [tokens - 512] and cut.lengths == [512]


async def test_windows_count_against_the_request_limit(core):
    engine, variant = core
    small = Engine(engine.registry, max_request_sequences=10)
    request = Request(Texts([PROSE]), Options(long_text="chunk", chunk_tokens=32))
    with pytest.raises(InvalidArgument) as caught:
        await small.embed(request, None, any_size, variant=variant)
    windows = len(plan_windows(len(content(variant, PROSE)[0]), 32, 4))
    assert f"1 texts make {windows} windows of chunk_tokens=32" in str(caught.value)
    assert "allowed at most 10 windows" in str(caught.value)


async def test_the_answer_size_is_known_before_computing_and_refused_then(core):
    engine, variant = core
    submitted = []
    original = variant.batcher.submit

    async def submit(payloads, lengths, timeout=None):
        submitted.append(len(payloads))
        return await original(payloads, lengths, timeout)

    variant.batcher.submit = submit
    try:
        sizes = []

        async def record(size: int) -> None:
            sizes.append(size)

        options = dict(
            long_text="chunk", chunk_tokens=32, token_embeddings=True, layers=(1,),
            pooling="mean", return_chunks=True, split="sentences",
        )  # fmt: skip
        result = await embed(core, [PROSE, "Two. Sentences."], admit=record, **options)
        assert sizes == [sum(array.nbytes for array in result.outputs.values())]
        windows = len(plan_windows(len(content(variant, PROSE)[0]), 32, 4)) + 1
        assert submitted == [windows] and len(result.outputs["chunk_spans"]) == windows
        limit = answer_limit(sizes[0] - 1, "the test's limit", "ask for less")
        with pytest.raises(AnswerTooLarge) as caught:
            await embed(core, [PROSE, "Two. Sentences."], admit=limit, **options)
        assert "over the test's limit" in str(caught.value)
        assert submitted == [windows]  # refused before any window was queued
    finally:
        del variant.batcher.submit


async def test_a_deadline_drops_the_waiting_windows(core):
    _, variant = core
    with pytest.raises(DeadlineExceeded):
        await embed(core, [LONG_PROSE], timeout=0.0, long_text="chunk", chunk_tokens=16)
    assert variant.batcher._queue.sequences == 0  # nothing of it waits any more


async def test_a_one_word_request_is_answered_while_a_long_text_is_computed(core):
    _, variant = core
    queued = asyncio.Event()
    original = variant.batcher.submit

    async def submit(payloads, lengths, timeout=None):
        waiting = original(payloads, lengths, timeout)
        if len(payloads) > 100:
            queued.set()  # set before the await below queues it: nothing runs in between
        return await waiting

    variant.batcher.submit = submit
    try:
        long = asyncio.create_task(
            embed(core, [LONG_PROSE], long_text="chunk", chunk_tokens=16, chunk_overlap=0)
        )
        await queued.wait()
        short = await embed(core, ["word"], long_text="chunk")
        assert short.lengths == [3]
        assert not long.done()  # the long text's windows are still being computed
        long.cancel()  # cancelled: its waiting windows leave the queue, never computed
        with pytest.raises(asyncio.CancelledError):
            await long
        assert variant.batcher._queue.sequences == 0
    finally:
        del variant.batcher.submit

"""The Python client against a live server: its numbers equal onnxruntime's on the same model."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest
from bertserve.client import AsyncClient, BertserveError, Client, load_tokenizer

TEXTS = [
    "I love Paris",
    "The quick brown fox jumps over the lazy dog.",
    "BERT turns text into vectors; bertserve serves them over gRPC.",
]
ATOL = 3e-5  # padding in a batch changes the order of float sums, not the values


@pytest.fixture(scope="module")
def client(live_server):
    with Client(live_server.target, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def reference(live_server, client):
    """Direct onnxruntime on the model folder the server answers from, one text at a time."""
    import onnxruntime as ort

    result = client.embed(TEXTS[:1])
    folder = live_server.repo / result.model / result.variant
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    tokenizer = load_tokenizer(folder)

    def run(text: str) -> dict[str, np.ndarray]:
        (encoded,) = tokenizer.encode([text])
        feed = {k: np.asarray([v], dtype=np.int64) for k, v in encoded.items()}
        names = [o.name for o in session.get_outputs()]
        return {n: v[0] for n, v in zip(names, session.run(None, feed), strict=True)}

    return folder, [run(text) for text in TEXTS]


def test_sentence_vectors_equal_onnxruntime(client, reference):
    _, refs = reference
    for pooling, expected in [
        ("cls", [r["last_hidden_state"][0] for r in refs]),
        ("pooler", [r["pooler_output"] for r in refs]),
        ("mean", [r["last_hidden_state"].mean(0) for r in refs]),
        ("max", [r["last_hidden_state"].max(0) for r in refs]),
    ]:
        result = client.embed(TEXTS, pooling=pooling)
        assert result.sentence_embedding.shape == (len(TEXTS), refs[0]["pooler_output"].shape[0])
        assert result.sentence_embedding.dtype == np.float32
        np.testing.assert_allclose(result.sentence_embedding, np.stack(expected), atol=ATOL)
    normalized = client.embed(TEXTS, pooling="mean", normalize=True).sentence_embedding
    mean = np.stack([r["last_hidden_state"].mean(0) for r in refs])
    np.testing.assert_allclose(
        normalized, mean / np.linalg.norm(mean, axis=1, keepdims=True), atol=ATOL
    )


def test_tokens_and_every_layer_equal_onnxruntime(client, reference):
    _, refs = reference
    num_layers = client.info().num_layers
    result = client.embed(TEXTS, output="tokens", layers="all")
    assert result.sentence_embedding is None
    assert list(result.hidden_states) == list(range(num_layers + 1))
    assert result.lengths.tolist() == [r["last_hidden_state"].shape[0] for r in refs]
    for i, ref in enumerate(refs):
        np.testing.assert_allclose(result.token_embeddings[i], ref["last_hidden_state"], atol=ATOL)
        for layer in range(num_layers + 1):
            np.testing.assert_allclose(
                result.hidden_states[layer][i], ref[f"hidden_states.{layer}"], atol=ATOL
            )
    negative = client.embed(TEXTS, layers=[-1, -2])
    assert list(negative.hidden_states) == [num_layers - 1, num_layers]
    assert negative.outputs[f"hidden_states.{num_layers}"].shape[0] == sum(negative.lengths)


def test_aggregations_follow_the_bert_paper(client, reference):
    _, refs = reference
    top = client.info().num_layers
    concat = client.embed(TEXTS, output="tokens", aggregate="concat_last_4")
    summed = client.embed(TEXTS, output="tokens", aggregate="sum_last_4")
    for i, ref in enumerate(refs):
        last4 = [ref[f"hidden_states.{layer}"] for layer in range(top - 3, top + 1)]
        assert concat.token_embeddings[i].shape[1] == 4 * ref["last_hidden_state"].shape[1]
        np.testing.assert_allclose(summed.token_embeddings[i], np.sum(last4, axis=0), atol=4 * ATOL)
        # concatenation order is the server's to choose; its parts are the last four layers
        parts = np.split(concat.token_embeddings[i], 4, axis=1)
        for part in parts:
            assert any(np.allclose(part, layer, atol=ATOL) for layer in last4)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_on_the_wire(client, dtype):
    full = client.embed(TEXTS, output="tokens", pooling="mean")
    half = client.embed(TEXTS, output="tokens", pooling="mean", dtype=dtype)
    expected_dtype = np.float16 if dtype == "float16" else np.float32
    assert half.sentence_embedding.dtype == expected_dtype
    relative = 2**-8 if dtype == "bfloat16" else 2**-10  # one unit in the last place
    for got, want in [(half.sentence_embedding, full.sentence_embedding)] + list(
        zip(half.token_embeddings, full.token_embeddings, strict=True)
    ):
        error = np.abs(got.astype(np.float32) - want)
        assert np.all(error <= np.abs(want) * relative + 1e-6)


def test_client_side_tokens_give_the_same_vectors(client, reference):
    folder, _ = reference
    sequences = load_tokenizer(folder).encode(TEXTS)
    from_texts = client.embed(TEXTS, output="tokens")
    from_ids = client.embed(sequences, output="tokens")
    assert from_ids.lengths.tolist() == from_texts.lengths.tolist()
    for a, b in zip(from_ids.token_embeddings, from_texts.token_embeddings, strict=True):
        np.testing.assert_allclose(a, b, atol=ATOL)
    assert [s["input_ids"] for s in sequences] == [e.input_ids for e in client.tokenize(TEXTS)]


def test_large_answers_arrive_in_chunks_and_whole(client):
    info = client.info()
    texts = [f"sentence {i} " + "word " * 400 for i in range(6)]
    result = client.embed(texts, layers="all", truncate=True)  # > 4 MB: through EmbedStream
    rows = int(result.lengths.sum())
    assert rows * info.hidden_size * 4 * (info.num_layers + 1) > 4 * 1024 * 1024
    assert np.all(result.lengths == min(info.max_length, 404))  # 402 words, [CLS], [SEP]
    small = client.embed(texts[:1], layers=[info.num_layers], truncate=True)
    np.testing.assert_allclose(
        result.hidden_states[info.num_layers][0], small.hidden_states[info.num_layers][0], atol=ATOL
    )


def test_tokenize_matches_the_classic_walk_through(client):
    (encoding,) = client.tokenize("I love Paris", pad_to=7)
    assert encoding.tokens == ["[CLS]", "i", "love", "paris", "[SEP]", "[PAD]", "[PAD]"]
    assert encoding.input_ids == [101, 1045, 2293, 3000, 102, 0, 0]
    assert encoding.attention_mask == [1, 1, 1, 1, 1, 0, 0]
    assert encoding.token_type_ids == [0] * 7


def test_info_models_health(client):
    info = client.info()
    assert info.num_layers >= 1 and info.hidden_size >= 1 and info.default_pooling
    assert info.name in [m.name for m in client.models()]
    assert client.health() == "SERVING"


def test_errors_keep_the_status_code(client):
    with pytest.raises(BertserveError) as missing:
        client.embed(TEXTS, model="no-such-model")
    assert missing.value.code is grpc.StatusCode.NOT_FOUND
    assert "no-such-model" in missing.value.details
    too_long = "word " * 5000
    with pytest.raises(BertserveError) as long:
        client.embed([too_long])
    assert long.value.code is grpc.StatusCode.INVALID_ARGUMENT
    cut = client.embed([too_long, "short"], truncate=True)
    assert cut.truncated[0] > 0 and cut.truncated[1] == 0
    assert cut.lengths[0] == client.info().max_length


def test_stream_keeps_order_and_reports_bad_requests_in_band(client):
    batches = [["one"], [[101, 10**6, 102]], ["two", "three"], ["four"]]
    items = list(client.embed_stream(batches, errors="return", window=2))
    assert [type(item).__name__ for item in items] == [
        "EmbedResult",
        "BertserveError",
        "EmbedResult",
        "EmbedResult",
    ]
    assert items[1].code is grpc.StatusCode.INVALID_ARGUMENT and items[1].request_id == "1"
    assert [len(item) for item in items if not isinstance(item, BertserveError)] == [1, 2, 1]
    with pytest.raises(BertserveError):
        list(client.embed_stream(batches))


def test_async_client_gives_the_same_answers(live_server, client):
    expected = client.embed(TEXTS, output="tokens", layers=[-1])

    async def run():
        async with AsyncClient(live_server.target, timeout=120) as aclient:
            one = await aclient.embed(TEXTS, output="tokens", layers=[-1])
            many = await asyncio.gather(*(aclient.embed([t]) for t in TEXTS))
            streamed = [r async for r in aclient.embed_stream([[t] for t in TEXTS], window=2)]
            return one, many, streamed, await aclient.health()

    one, many, streamed, health = asyncio.run(run())
    assert health == "SERVING"
    for a, b in zip(one.token_embeddings, expected.token_embeddings, strict=True):
        np.testing.assert_allclose(a, b, atol=ATOL)
    singles = client.embed(TEXTS).sentence_embedding
    for i, (unary, stream) in enumerate(zip(many, streamed, strict=True)):
        np.testing.assert_allclose(unary.sentence_embedding[0], singles[i], atol=ATOL)
        np.testing.assert_allclose(stream.sentence_embedding[0], singles[i], atol=ATOL)


def test_classify_without_a_head_is_a_clear_error(client):
    # the test model has no classification head: the status and message say so
    assert client.info().labels == []
    with pytest.raises(BertserveError) as error:
        client.classify(["I love Paris"], top_k=1)
    assert error.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert "classification head" in error.value.details

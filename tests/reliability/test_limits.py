"""The "where we stand" findings of issue 10, each on a real server: answer sizes, Tokenize,
message sizes, concurrency, variants, and the client's timeouts and fallbacks."""

from __future__ import annotations

import asyncio
import queue
import time

import grpc
import numpy as np
import pytest
from bertserve.client import AsyncClient, BertserveError, Client
from bertserve.v1 import bertserve_pb2 as pb
from bertserve.v1 import bertserve_pb2_grpc
from scenarios import text
from servers import start_server


@pytest.fixture(scope="module")
def server(model_repo):
    server = start_server(
        model_repo,
        *("--max-loaded-variants", "2", "--allowed-variants", "fp32,fp32-opt"),
        *("--max-request-sequences", "2048"),
    )
    yield server
    server.stop()


def stream_once(target: str, request: pb.EmbedRequest) -> list[pb.EmbedResponse]:
    with grpc.insecure_channel(target) as channel:
        stub = bertserve_pb2_grpc.BertServiceStub(channel)
        return list(stub.EmbedStream(iter([request]), timeout=120))


def test_a_huge_stream_answer_is_refused_in_band_before_computing(server):
    # a 36 KB request for token embeddings and every layer: 12 x 512 tokens x 8 x 384 x 4
    # bytes = 75 MB of answer, over the default 16 MiB
    request = pb.EmbedRequest(
        id="big", texts=["paris " * 500] * 12, truncate=True, token_embeddings=True, all_layers=True
    )
    assert request.ByteSize() < 40_000
    (answer,) = stream_once(server.target, request)
    assert answer.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert answer.error.reason == "ANSWER_TOO_LARGE"
    assert "max_answer_bytes" in answer.error.message and "MiB" in answer.error.message


def test_tokenize_refuses_an_answer_over_the_message_limit(server):
    with grpc.insecure_channel(server.target) as channel:
        stub = bertserve_pb2_grpc.BertServiceStub(channel)
        small = pb.TokenizeRequest(texts=["I love Paris, and Rome too"] * 2000)
        assert len(stub.Tokenize(small, timeout=120).encodings) == 2000
        # 800 KB of text: a 20 MB answer, built off the event loop, then refused
        many = pb.TokenizeRequest(texts=[" ".join(["paris"] * 400)] * 2000, truncate=True)
        with pytest.raises(grpc.RpcError) as error:
            stub.Tokenize(many, timeout=120)
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "4 MiB message limit" in error.value.details()
        assert dict(error.value.trailing_metadata())["bertserve-reason"] == "ANSWER_TOO_LARGE"
        too_many = pb.TokenizeRequest(texts=["a"] * 3000)
        with pytest.raises(grpc.RpcError) as error:
            stub.Tokenize(too_many, timeout=60)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "allowed 1..2048 (max_request_sequences)" in error.value.details()


def test_a_five_megabyte_batch_is_accepted_and_a_too_big_one_fails_alone(server):
    five_mb = [f"{text(i)} " + "rome " * 40_000 for i in range(25)]  # 5 MB of text
    with Client(server.target, timeout=300) as client:
        result = client.embed(five_mb, truncate=True)  # the server takes what the client sends
        assert result.sentence_embedding.shape == (25, 384)
        # on a stream, a batch over the 16 MiB message limit fails alone; the rest are answered
        too_big = [("paris " * 30_000)] * 100
        batches = [[text(0)], too_big, [text(1)], [text(2)]]
        items = list(client.embed_stream(batches, errors="return", truncate=True))
    assert [type(i).__name__ for i in items] == [
        "EmbedResult",
        "BertserveError",
        "EmbedResult",
        "EmbedResult",
    ]
    assert items[1].code == grpc.StatusCode.RESOURCE_EXHAUSTED and "16 MiB" in items[1].details
    with Client(server.target) as client:
        expected = client.embed([text(0), text(1), text(2)]).sentence_embedding
    got = np.concatenate([items[0].sentence_embedding, items[2].sentence_embedding])
    np.testing.assert_allclose(got, expected[:2], atol=1e-5)


def test_variants_callers_may_load_are_limited(server):
    with Client(server.target) as client:
        assert client.embed("I love Paris", variant="fp32").variant == "fp32"
        with pytest.raises(BertserveError) as error:
            client.embed("I love Paris", variant="int8")
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "not served by this server (allowed_variants)" in error.value.details
    assert "['fp32', 'fp32-opt']" in error.value.details


def test_the_cap_on_loaded_variants(model_repo):
    server = start_server(model_repo, "--max-loaded-variants", "1")
    try:
        with Client(server.target) as client:
            client.embed("I love Paris")  # the default variants are loaded at start
            with pytest.raises(BertserveError) as error:
                client.embed("I love Paris", variant="fp32")
    finally:
        server.stop()
    assert error.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert (
        "(max_loaded_variants)" in error.value.details and "minilm/fp32-opt" in error.value.details
    )


def test_client_timeouts_hold_on_the_stream_fallback_and_across_attempts(server):
    # a token-level answer over 4 MB goes over EmbedStream: the timeout must still hold
    texts = ["paris " * 400] * 16
    with Client(server.target) as client:
        started = time.monotonic()
        with pytest.raises(BertserveError) as error:
            client.embed(texts, output="tokens", layers="all", truncate=True, timeout=0.05)
        elapsed = time.monotonic() - started
    assert error.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert elapsed < 5, elapsed  # a bound on a bug (7.3 s before), not a speed measurement


def test_three_thousand_sentences_stream_in_pieces(server):
    texts = [text(i) for i in range(3000)]
    with Client(server.target, timeout=300) as client:
        result = client.embed(texts)
        reference = client.embed(texts[:40]).sentence_embedding
    assert result.sentence_embedding.shape == (3000, 384)
    assert result.lengths.tolist() == [i % 5 + 6 for i in range(3000)]
    np.testing.assert_allclose(result.sentence_embedding[:40], reference, atol=1e-5)

    async def aio():
        async with AsyncClient(server.target, timeout=300) as client:
            return await client.embed(texts[:600])

    result = asyncio.run(aio())
    np.testing.assert_allclose(result.sentence_embedding[:40], reference, atol=1e-5)


def test_too_many_concurrent_calls_are_refused_fast(model_repo):
    server = start_server(model_repo, "--max-concurrent-rpcs", "4")
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = bertserve_pb2_grpc.BertServiceStub(channel)
            feeds = [queue.Queue() for _ in range(6)]
            # six streams that stay open: four are admitted, two refused
            calls = [stub.EmbedStream(iter(feed.get, None), timeout=60) for feed in feeds]
            for feed in feeds:
                feed.put(pb.EmbedRequest(id="1", texts=["hi"]))
            outcomes = []
            for call in calls:
                try:
                    outcomes.append(next(call).id)
                except grpc.RpcError as error:
                    outcomes.append(error.code())
                    assert "max_concurrent_rpcs" in error.details()
            for call, feed in zip(calls, feeds, strict=True):
                feed.put(None)
                call.cancel()
    finally:
        server.stop()
    assert outcomes.count("1") == 4
    assert outcomes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 2

"""The client's recovery logic against a real gRPC server that fails on purpose.

A stand-in servicer (real gRPC on loopback, numbers made from the request id) lets
each failure happen at an exact point, which a model server cannot promise.
"""

from __future__ import annotations

import threading
from concurrent import futures

import grpc
import numpy as np
import pytest
from bertserve.client import BertserveError, Client
from bertserve.v1 import bertserve_pb2 as pb
from bertserve.v1 import bertserve_pb2_grpc as pb_grpc


def answer(request: pb.EmbedRequest) -> pb.EmbedResponse:
    vectors = np.array([[float(request.id), float(len(request.texts))]], dtype=np.float32)
    return pb.EmbedResponse(
        id=request.id,
        lengths=[3] * len(request.texts),
        outputs=[
            pb.TensorPiece(
                name="sentence_embedding",
                total_rows=1,
                tensor=pb.Tensor(dtype=pb.DTYPE_FLOAT32, shape=[1, 2], data=vectors.tobytes()),
            )
        ],
        last=True,
    )


class Flaky(pb_grpc.BertServiceServicer):
    """The first stream answers two requests, reads three more, then fails UNAVAILABLE."""

    def __init__(self) -> None:
        self.streams: list[list[str]] = []
        self.unary_calls = 0
        self.lock = threading.Lock()

    def EmbedStream(self, requests, context):
        with self.lock:
            self.streams.append(received := [])
            first = len(self.streams) == 1
        for request in requests:
            received.append(request.id)
            if first and len(received) == 5:
                context.abort(grpc.StatusCode.UNAVAILABLE, "replica going away")
            if first and len(received) > 2:
                continue  # read, never answered
            yield answer(request)

    def Embed(self, request, context):
        with self.lock:
            self.unary_calls += 1
            calls = self.unary_calls
        if calls == 1:
            context.send_initial_metadata(())  # committed: the channel will not retry it
            context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset")
        if request.texts and request.texts[0] == "bad":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad text")
        return answer(request)


def serving(servicer):
    """``servicer`` on a real gRPC server on loopback: yields (servicer, target)."""
    server = grpc.server(futures.ThreadPoolExecutor(4))
    pb_grpc.add_BertServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(0)


@pytest.fixture
def flaky():
    yield from serving(Flaky())


def stream_in_order(target: str, count: int) -> None:
    """``count`` one-text requests over one ``embed_stream`` (window 4): every answer comes
    back, in order (the stand-ins answer text "tN" with N)."""
    with Client(target) as client:
        results = list(client.embed_stream(([f"t{i}"] for i in range(count)), window=4))
    assert [int(r.sentence_embedding[0, 0]) for r in results] == list(range(count))


def test_stream_sends_unanswered_requests_again(flaky):
    servicer, target = flaky
    stream_in_order(target, 20)
    first, second = servicer.streams
    assert first == ["0", "1", "2", "3", "4"]
    assert second[:3] == ["2", "3", "4"]  # resent first, in order
    assert sorted(second, key=int) == [str(i) for i in range(2, 20)]


def test_unary_call_failing_after_its_reply_began_is_retried(flaky):
    servicer, target = flaky
    with Client(target) as client:
        result = client.embed(["one", "two"])
        assert result.sentence_embedding.tolist() == [[float(result.id), 2.0]]
        with pytest.raises(BertserveError) as error:
            client.embed(["bad"])
    assert servicer.unary_calls == 3  # failed, retried, then the bad one: not retried
    assert (
        error.value.code is grpc.StatusCode.INVALID_ARGUMENT and error.value.details == "bad text"
    )


def test_async_unary_call_failing_after_its_reply_began_is_retried(flaky):
    import asyncio

    from bertserve.client import AsyncClient

    servicer, target = flaky

    async def run():
        async with AsyncClient(target) as client:
            result = await client.embed(["one", "two"])
            with pytest.raises(BertserveError) as error:
                await client.embed(["bad"])
            return result, error.value

    result, error = asyncio.run(run())
    assert result.sentence_embedding.tolist() == [[float(result.id), 2.0]]
    assert servicer.unary_calls == 3 and error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.__cause__ is None and error.__suppress_context__


def test_async_stream_sends_unanswered_requests_again(flaky):
    import asyncio

    from bertserve.client import AsyncClient

    servicer, target = flaky

    async def run():
        async with AsyncClient(target) as client:
            batches = ([f"t{i}"] for i in range(20))
            return [r async for r in client.embed_stream(batches, window=4)]

    results = asyncio.run(run())
    assert [int(r.sentence_embedding[0, 0]) for r in results] == list(range(20))
    first, second = servicer.streams
    assert first == ["0", "1", "2", "3", "4"]
    assert sorted(second, key=int) == [str(i) for i in range(2, 20)]


class Busy(pb_grpc.BertServiceServicer):
    """In-band RESOURCE_EXHAUSTED (overload) for the first two sends of every odd id, an
    answer too large for the text "big"; unary Embed overloaded, or too large for "big"."""

    def __init__(self) -> None:
        self.sends: dict[str, int] = {}
        self.streams = 0
        self.unary_calls = 0

    def EmbedStream(self, requests, context):
        self.streams += 1
        for request in requests:
            sends = self.sends[request.id] = self.sends.get(request.id, 0) + 1
            if request.texts[0] == "big":
                reason, message = "ANSWER_TOO_LARGE", "the answer would be 75 MiB"
            elif int(request.id) % 2 and sends <= 2:
                reason, message = "OVERLOADED", "queue full"
            else:
                yield answer(request)
                continue
            error = pb.Error(
                code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], message=message, reason=reason
            )
            yield pb.EmbedResponse(id=request.id, error=error, last=True)

    def ModelInfo(self, request, context):
        info = pb.ModelInfo(name="m", num_layers=2, hidden_size=2, max_length=512)
        return pb.ModelInfoResponse(model=info)

    def Embed(self, request, context):
        self.unary_calls += 1
        reason = "ANSWER_TOO_LARGE" if request.texts[0] == "big" else "OVERLOADED"
        context.abort_with_status(_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "no", reason))


def _status(code, details, reason):
    class Status(grpc.Status):
        pass

    status = Status()
    status.code, status.details = code, details
    status.trailing_metadata = (("bertserve-reason", reason),)
    return status


@pytest.fixture
def busy():
    yield from serving(Busy())


def test_stream_items_refused_for_overload_are_sent_again_after_a_backoff(busy):
    servicer, target = busy
    stream_in_order(target, 10)
    assert servicer.sends == {str(i): 3 if i % 2 else 1 for i in range(10)}
    assert servicer.streams == 1  # resent on the same stream


def test_async_stream_items_refused_for_overload_are_sent_again(busy):
    import asyncio

    from bertserve.client import AsyncClient

    servicer, target = busy

    async def run():
        async with AsyncClient(target) as client:
            return [r async for r in client.embed_stream([f"t{i}"] for i in range(10))]

    results = asyncio.run(run())
    assert [int(r.sentence_embedding[0, 0]) for r in results] == list(range(10))
    assert servicer.sends == {str(i): 3 if i % 2 else 1 for i in range(10)}


def test_overload_is_not_taken_for_an_answer_too_large(busy):
    servicer, target = busy
    with Client(target) as client:
        with pytest.raises(BertserveError) as error:
            client.embed("small", output="tokens", layers=[])
        assert error.value.reason == "OVERLOADED" and error.value.retryable
        assert servicer.streams == 0  # not resent over a stream: that would double the load
        with pytest.raises(BertserveError) as error:
            client.embed("big", output="tokens")
    # an answer too large goes over a stream, where "big" is refused for good, not retried
    assert error.value.reason == "ANSWER_TOO_LARGE" and not error.value.retryable
    assert servicer.streams == 1 and servicer.sends == {"1/0": 1}

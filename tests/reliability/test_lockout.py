"""No lockout by idle callers: streams share the call slots with a reserve for unary calls,
one connection has a share, and a stream that stays silent is closed with a clear status."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from bertserve.inference import grpc_service_pb2 as v2
from bertserve.inference import grpc_service_pb2_grpc
from bertserve.server.limits import Slots
from bertserve.v1 import bertserve_pb2 as pb
from bertserve.v1 import bertserve_pb2_grpc
from servers import scrape, start_server, total

STREAMS, CONNECTIONS = 1030, 10


def test_unary_calls_past_a_share_borrow_spare_slots_but_leave_a_share_free():
    slots = Slots(total=12, per_peer=4, streams=10)
    busy = "ipv4:127.0.0.1:1000"
    for _ in range(4):
        slots.take(busy, streaming=False)
    assert "max_rpcs_per_peer) is 4" in slots.refusal(busy, streaming=True)  # streams: never
    for _ in range(4):  # unary calls: while more than a share stays spare
        assert slots.refusal(busy, streaming=False) is None
        slots.take(busy, streaming=False)
    assert "the 4 spare slots are kept for others" in slots.refusal(busy, streaming=False)
    assert slots.refusal("ipv4:127.0.0.1:2000", streaming=False) is None  # another connection


def test_slots_keep_a_unary_reserve_and_a_share_per_connection():
    slots = Slots(total=10, per_peer=4, streams=7)
    for i in range(7):  # seven streams from two connections, within their shares
        peer = f"ipv4:127.0.0.1:{1000 + i % 2}"
        assert slots.refusal(peer, streaming=True) is None, i
        slots.take(peer, streaming=True)
    assert "unary_reserved_rpcs=3" in slots.refusal("ipv4:127.0.0.1:3000", streaming=True)
    # the reserve serves unary calls from any connection that holds less than its share
    assert slots.refusal("ipv4:127.0.0.1:3000", streaming=False) is None
    assert "max_rpcs_per_peer) is 4" in slots.refusal("ipv4:127.0.0.1:1000", streaming=False)
    for _ in range(3):
        slots.take("ipv4:127.0.0.1:3000", streaming=False)
    assert "max_concurrent_rpcs) is 10" in slots.refusal("ipv4:127.0.0.1:4000", streaming=False)
    slots.give("ipv4:127.0.0.1:1000", streaming=True)
    assert slots.refusal("ipv4:127.0.0.1:1000", streaming=False) is None
    slots.take("ipv4:127.0.0.1:1000", streaming=False)
    for _ in range(3):
        slots.give("ipv4:127.0.0.1:3000", streaming=False)
    assert "ipv4:127.0.0.1:3000" not in slots.by_peer  # no entry left behind per connection
    assert (slots.in_flight, slots.streams) == (7, 6)


async def silent():
    """A request iterator that never sends (until its call is cancelled)."""
    await asyncio.Event().wait()
    yield pb.EmbedRequest()  # pragma: no cover


def text_request(text: str) -> v2.ModelInferRequest:
    encoded = text.encode()
    return v2.ModelInferRequest(
        model_name="minilm",
        inputs=[v2.ModelInferRequest.InferInputTensor(name="TEXT", datatype="BYTES", shape=[1])],
        raw_input_contents=[len(encoded).to_bytes(4, "little") + encoded],
    )


@pytest.fixture(scope="module")
def default_server(model_repo):
    """A server with the default limits (1,024 calls, 128 of them kept for unary calls)."""
    server = start_server(model_repo, "--no-warmup")
    yield server
    server.stop()


def connection(target: str) -> grpc.aio.Channel:
    """A channel with a connection of its own (no subchannel shared with other channels)."""
    return grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])


async def first_ended(calls: list, count: int) -> list:
    """The first ``count`` of ``calls`` to end (their status awaited, not slept for)."""
    ended = {asyncio.ensure_future(call.code()): call for call in calls}
    finished: list = []
    pending = set(ended)
    while len(finished) < count:
        done, pending = await asyncio.wait(pending, timeout=120, return_when="FIRST_COMPLETED")
        assert done, f"only {len(finished)} of {count} calls ended after 120 s"
        finished += done
    for future in pending:
        future.cancel()
    return [ended[future] for future in finished]


async def test_one_connection_holds_at_most_its_share(default_server):
    # the default share is a quarter of 1,024: the 257th call on one connection is refused
    async with connection(default_server.target) as one, connection(default_server.target) as other:
        calls = [bertserve_pb2_grpc.BertServiceStub(one).EmbedStream(silent()) for _ in range(257)]
        (refused,) = await first_ended(calls, 1)
        assert await refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "(max_rpcs_per_peer) is 256" in await refused.details()
        # another connection is served meanwhile
        answer = await bertserve_pb2_grpc.BertServiceStub(other).Embed(
            pb.EmbedRequest(texts=["I love Paris"]), timeout=60
        )
        assert list(answer.lengths) == [5]
        for call in calls:
            call.cancel()
    end = time.monotonic() + 60
    while total(scrape(default_server.metrics_url), "bertserve_in_flight_requests"):
        assert time.monotonic() < end, "the cancelled streams kept their slots"
        await asyncio.sleep(0.05)  # polls a condition; orders nothing


async def test_1030_idle_streams_over_10_connections_do_not_lock_out_a_new_caller(
    default_server, figures
):
    # separate subchannel pools: ten real connections, ten peers
    channels = [connection(default_server.target) for _ in range(CONNECTIONS)]
    calls = [
        bertserve_pb2_grpc.BertServiceStub(channels[i % CONNECTIONS]).EmbedStream(silent())
        for i in range(STREAMS)
    ]
    try:
        # streams may hold 1024 - 128 = 896 slots: the other 134 are refused at once, and
        # once they are, the streams hold every slot they can
        refused = await first_ended(calls, STREAMS - 896)
        for call in refused:
            assert await call.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "unary_reserved_rpcs" in await call.details()
        assert total(scrape(default_server.metrics_url), "bertserve_in_flight_requests") == 896

        async with connection(default_server.target) as newcomer:
            stub = bertserve_pb2_grpc.BertServiceStub(newcomer)
            started = time.perf_counter()
            answer = await stub.Embed(pb.EmbedRequest(texts=["I love Paris"]), timeout=60)
            embed_ms = (time.perf_counter() - started) * 1000
            assert list(answer.lengths) == [5]
            v2_stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(newcomer)
            started = time.perf_counter()
            inferred = await v2_stub.ModelInfer(text_request("I love Paris"), timeout=60)
            infer_ms = (time.perf_counter() - started) * 1000
            assert inferred.model_name == "minilm" and inferred.outputs
            # and a new stream is told why it waits
            with pytest.raises(grpc.aio.AioRpcError) as stream_refused:
                await stub.EmbedStream(silent()).read()
            assert stream_refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "unary calls are still served" in stream_refused.value.details()
        figures["idle_stream_lockout"] = {
            "streams": STREAMS,
            "connections": CONNECTIONS,
            "held": STREAMS - len(refused),
            "refused": len(refused),
            "newcomer_embed_ms": round(embed_ms, 1),
            "newcomer_model_infer_ms": round(infer_ms, 1),
        }
    finally:
        for call in calls:
            call.cancel()
        for channel in channels:
            await channel.close()


async def test_a_silent_stream_is_closed_after_the_idle_timeout(model_repo):
    server = start_server(model_repo, "--no-warmup", "--stream-idle-timeout", "0.5")
    try:
        async with grpc.aio.insecure_channel(server.target) as channel:
            stub = bertserve_pb2_grpc.BertServiceStub(channel)
            never = stub.EmbedStream(silent())
            assert await never.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            details = await never.details()
            assert "stream_idle_timeout_s" in details and "0.5 s" in details, details
            assert dict(await never.trailing_metadata())["bertserve-reason"] == "IDLE"

            # a stream that was answered and then falls silent is closed the same way
            requests: asyncio.Queue = asyncio.Queue()

            async def feed():
                while (request := await requests.get()) is not None:
                    yield request

            once = stub.EmbedStream(feed())
            await requests.put(pb.EmbedRequest(id="1", texts=["I love Paris"]))
            assert (await once.read()).id == "1"
            assert await once.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            await requests.put(None)
            # a stream whose request is computed for longer than the timeout is busy, not idle:
            # 48 texts of 250 words take many times 0.5 s on a CPU
            busy = stub.EmbedStream(feed())
            long_texts = [" ".join(["paris"] * 250)] * 48
            await requests.put(pb.EmbedRequest(id="2", texts=long_texts))
            chunks = []
            while not chunks or not chunks[-1].last:
                chunks.append(await busy.read())
            assert not chunks[-1].HasField("error") and chunks[0].id == "2"
            assert await busy.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # silent after it
            await requests.put(None)
            v2_stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
            v2_silent = v2_stub.ModelStreamInfer(silent())
            assert await v2_silent.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # their slots are free again
        assert total(scrape(server.metrics_url), "bertserve_in_flight_requests") == 0
    finally:
        server.stop()

"""Deadlines, cancellation and a full queue, on in-process servers with the real model (draining:
tests/reliability/test_faults.py on v1, tests/oip on v2, tests/deploy for the image).

Each test keeps the worker busy with one batch of long sequences that runs for seconds, so the
request under test waits in the queue behind it; what happens to it is read from the batcher and
the metrics.
"""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest
from bertserve.server.config import BatchSettings
from bertserve.server.metrics import (
    BATCH_SIZE,
    DROPPED,
    QUEUE_DEPTH,
    QUEUE_SECONDS,
    QUEUE_SEQUENCES,
)
from bertserve.v1 import bertserve_pb2 as pb
from server_helpers import assemble, start_in_process

LONG = [" ".join(["paris"] * 300) + f" {i}" for i in range(64)]


@pytest.fixture
async def one_long_batch(model_repo):
    """A server whose every batch may hold all of LONG (one batch of seconds), and that queues
    at most two requests."""
    running = await start_in_process(
        model_repo,
        batch=BatchSettings(
            max_batch_size=len(LONG),
            max_batch_tokens=1 << 15,
            max_queue_delay_ms=0,
            max_queue_requests=2,
        ),
        variants={"minilm": "fp32-opt"},
    )
    yield running
    await running.channel.close()
    await running.server.stop(0)


def batcher_of(running):
    registry = running.server.registry
    return registry.loaded[("minilm", registry.default_variants["minilm"])].batcher


def gauge(metric, running) -> float:
    return metric.labels(batcher_of(running).name)._value.get()


def computed(running) -> float:
    """Sequences the default variant's batcher has computed (its batch-size histogram's sum)."""
    return BATCH_SIZE.labels(batcher_of(running).name)._sum.get()


def batches_started(running) -> float:
    """Requests whose first batch has started (the queue-wait histogram's count)."""
    child = QUEUE_SECONDS.labels(batcher_of(running).name)
    return sum(bucket.get() for bucket in child._buckets)


async def until(condition, call=None, timeout: float = 60.0) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds, or once ``call`` (the
    long request the test queues behind) has finished."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert call is None or not call.done(), "the long request finished too soon"
        assert loop.time() < deadline, "the server never reached the state the test waits for"
        await asyncio.sleep(0.002)


async def started(running, call, before: float):
    """Wait until the long call's batch runs (it holds the worker now)."""
    await until(lambda: batches_started(running) != before, call)


def dropped(running) -> float:
    label = batcher_of(running).name
    return sum(DROPPED.labels(label, reason)._value.get() for reason in ("cancelled", "deadline"))


async def test_an_expired_request_is_answered_deadline_exceeded_and_never_computed(one_long_batch):
    before_started, before_computed = batches_started(one_long_batch), computed(one_long_batch)
    long_call = one_long_batch.stub.Embed(pb.EmbedRequest(texts=LONG))
    await started(one_long_batch, long_call, before_started)
    before = dropped(one_long_batch)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await one_long_batch.stub.Embed(pb.EmbedRequest(texts=["too late", "me too"]), timeout=0.2)
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert not long_call.done(), "the long batch ended too soon for this test to mean anything"
    assert len((await long_call).lengths) == len(LONG)
    await one_long_batch.stub.Embed(pb.EmbedRequest(texts=["after"]))
    assert computed(one_long_batch) - before_computed == len(LONG) + 1  # not the expired two
    assert dropped(one_long_batch) == before + 2


async def test_a_cancelled_request_is_dropped_and_never_computed(one_long_batch):
    before_started, before_computed = batches_started(one_long_batch), computed(one_long_batch)
    long_call = one_long_batch.stub.Embed(pb.EmbedRequest(texts=LONG))
    await started(one_long_batch, long_call, before_started)
    before = dropped(one_long_batch)
    cancelled = one_long_batch.stub.Embed(pb.EmbedRequest(texts=["never", "mind", "me"]))
    await until(lambda: gauge(QUEUE_SEQUENCES, one_long_batch) >= 3, long_call)  # queued
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert not long_call.done(), "the long batch ended too soon for this test to mean anything"
    await long_call
    await one_long_batch.stub.Embed(pb.EmbedRequest(texts=["after"]))
    assert computed(one_long_batch) - before_computed == len(LONG) + 1  # not the cancelled three
    assert dropped(one_long_batch) == before + 3


async def test_a_full_queue_answers_resource_exhausted(one_long_batch):
    before_started = batches_started(one_long_batch)
    long_call = one_long_batch.stub.Embed(pb.EmbedRequest(texts=LONG))
    await started(one_long_batch, long_call, before_started)
    waiting = [one_long_batch.stub.Embed(pb.EmbedRequest(texts=[t])) for t in ("a", "b")]
    await until(lambda: gauge(QUEUE_DEPTH, one_long_batch) >= 2, long_call)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await one_long_batch.stub.Embed(pb.EmbedRequest(texts=["one too many"]))
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "queue full" in error.value.details()
    assert not long_call.done(), "the long batch ended too soon for this test to mean anything"
    assert len((await long_call).lengths) == len(LONG)
    for call in waiting:
        assert len((await call).lengths) == 1


async def test_health_is_not_serving_until_the_models_are_loaded(model_repo):
    from bertserve.server.app import BertServer
    from bertserve.server.config import ServerConfig
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    server = BertServer(ServerConfig(repo=model_repo, port=0))
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service="bertserve.v1.BertService")
        assert (await health.Check(request)).status == health_pb2.HealthCheckResponse.NOT_SERVING
        await server.load()
        assert (await health.Check(request)).status == health_pb2.HealthCheckResponse.SERVING
        await server.stop(0)


async def test_two_instances_answer_like_one(model_repo, in_process):
    running = await start_in_process(
        model_repo,
        instances=2,
        batch=BatchSettings(max_batch_size=2),
        variants={"minilm": "fp32-opt"},
    )
    try:
        texts = [" ".join(["word"] * n) for n in range(1, 30, 4)]
        requests = [pb.EmbedRequest(texts=[t], token_embeddings=True) for t in texts]
        two = await asyncio.gather(*(running.stub.Embed(r) for r in requests))
        one = await asyncio.gather(*(in_process.stub.Embed(r) for r in requests))
        for a, b in zip(two, one, strict=True):
            assert list(a.lengths) == list(b.lengths)
            np.testing.assert_allclose(
                assemble([a])["token_embeddings"], assemble([b])["token_embeddings"], atol=1e-4
            )
        (variant,) = running.server.registry.loaded.values()
        assert variant.runtime.instances == 2
    finally:
        await running.channel.close()
        await running.server.stop(0)


async def test_an_unexpected_error_is_logged_and_answered_internal(model_repo, caplog):
    from bertserve.server.core.engine import Engine
    from bertserve.server.models import ModelRegistry
    from bertserve.server.rpc import unary
    from bertserve.server.v1.servicer import BertServicer
    from bertserve.v1 import bertserve_pb2_grpc

    class Broken(BertServicer):
        """A servicer whose ModelInfo has a bug (what the last-resort handler is for)."""

        @unary("ModelInfo")
        async def ModelInfo(self, request, context):
            return {}["missing"]

    from bertserve.server.config import ServerConfig

    server = grpc.aio.server()
    config = ServerConfig(repo=model_repo, port=0)
    servicer = Broken(Engine(ModelRegistry(config), config.max_request_sequences), config)
    bertserve_pb2_grpc.add_BertServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = bertserve_pb2_grpc.BertServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await stub.ModelInfo(pb.ModelInfoRequest())
            assert error.value.code() == grpc.StatusCode.INTERNAL
            assert "KeyError" in error.value.details()
            listed = await stub.ListModels(pb.ListModelsRequest())  # the server lives on
            assert [m.name for m in listed.models] == ["minilm"]
    finally:
        await server.stop(0)
    assert any("ModelInfo failed" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_checking_many_token_sequences_does_not_stall_the_server(in_process):
    """30,000 pre-tokenized sequences are checked off the event loop: a ModelInfo sent just
    after is answered first, and the bad id in the last sequence is still found."""
    sequences = [pb.TokenSequence(input_ids=[101, 7592, 2088, 999, 102])] * 29_999
    sequences.append(pb.TokenSequence(input_ids=[101, 99_999, 102]))
    guard = in_process.server.guard
    before = guard.in_flight
    big = asyncio.ensure_future(in_process.stub.Embed(pb.EmbedRequest(sequences=sequences)))
    await until(lambda: guard.in_flight != before, big)  # the servicer has it: being checked
    info = await in_process.stub.ModelInfo(pb.ModelInfoRequest())
    assert info.model.name == "minilm"
    assert not big.done(), "the big request was answered before the ModelInfo sent after it"
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await big
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "sequences[29999].input_ids[1]=99999: outside the vocabulary" in error.value.details()


async def test_a_request_larger_than_the_queue_is_refused_before_any_work(in_process):
    batch = in_process.server.registry.loaded[("minilm", "fp32-opt")].batcher.settings
    texts = ["x"] * (batch.max_queue_sequences + 1)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await in_process.stub.Embed(pb.EmbedRequest(texts=texts))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    limit = batch.max_queue_sequences
    assert error.value.details().startswith(
        f"texts: {limit + 1} in one request; allowed 1..{limit} (the most the model's queue "
        "holds, max_queue_sequences)"
    )

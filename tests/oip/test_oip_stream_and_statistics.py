"""On an in-process server: a malformed stream message is named in the words of the protocol
the caller used, and the v2 statistics' compute_input counts reading the inputs as well as
tokenizing them."""

from __future__ import annotations

import struct
import time

import grpc
import pytest
from bertserve.inference import grpc_service_pb2 as v2
from bertserve.inference import grpc_service_pb2_grpc
from bertserve.server.app import create_server
from bertserve.server.config import BatchSettings, ServerConfig
from bertserve.server.oip import codec
from bertserve.v1 import bertserve_pb2 as pb

GARBAGE = b"\xff\xff\xff"  # not a protobuf message of any type


@pytest.fixture(scope="module")
async def running(model_repo):
    config = ServerConfig(
        repo=model_repo,
        port=0,
        warmup=False,
        variants={"minilm": "fp32-opt"},
        batch=BatchSettings(max_queue_delay_ms=0),
    )
    server, port = await create_server(config.validate())
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield server, channel
    await server.stop(0)


def text_request(*texts: str) -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(model_name="minilm", model_version="fp32-opt")
    request.inputs.add(name="TEXT", datatype="BYTES", shape=[len(texts)])
    request.raw_input_contents.append(
        b"".join(struct.pack("<I", len(t.encode())) + t.encode() for t in texts)
    )
    return request


async def stream_error(channel: grpc.aio.Channel, method: str, messages: list[bytes]) -> str:
    """The status details that end a raw stream of ``messages`` (bytes as sent)."""
    call = channel.stream_stream(method)(iter(messages))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        async for _ in call:
            pass
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return error.value.details()


async def test_a_malformed_v2_stream_request_is_named_in_v2_words(running):
    _, channel = running
    good = text_request("I love Paris").SerializeToString()
    details = await stream_error(
        channel, "/inference.GRPCInferenceService/ModelStreamInfer", [good, GARBAGE]
    )
    assert details.startswith("request 1 of the stream: the 3 bytes sent to ")
    assert "do not decode as inference.ModelInferRequest" in details
    assert "allowed: inference.ModelInferRequest serialized with protobuf" in details
    assert "the Open Inference Protocol's grpc_service.proto" in details
    assert "bertserve.v1" not in details


async def test_a_malformed_v1_stream_message_is_named_in_v1_words(running):
    _, channel = running
    good = pb.EmbedRequest(id="a", texts=["I love Paris"]).SerializeToString()
    details = await stream_error(channel, "/bertserve.v1.BertService/EmbedStream", [good, GARBAGE])
    assert details.startswith("message 1 of the stream: the 3 bytes sent to ")
    assert "do not decode as bertserve.v1.EmbedRequest" in details
    assert "bertserve.v1's bertserve.proto" in details
    assert "inference." not in details


async def test_compute_input_counts_reading_the_inputs_and_tokenizing(running, monkeypatch):
    server, channel = running
    read_ns: list[int] = []
    tokenization_ns: list[int] = []
    read = codec.core_request

    def reading(*args):
        start = time.monotonic_ns()
        try:
            return read(*args)
        finally:
            read_ns.append(time.monotonic_ns() - start)

    engine = server.inference.engine
    embed = engine.embed

    async def embedding(*args, **kwargs):
        answer = await embed(*args, **kwargs)
        tokenization_ns.append(answer[0].timing.tokenization_ns)
        return answer

    monkeypatch.setattr(codec, "core_request", reading)
    monkeypatch.setattr(engine, "embed", embedding)
    stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)

    async def stats() -> v2.InferStatistics:
        asked = v2.ModelStatisticsRequest(name="minilm", version="fp32-opt")
        (model,) = (await stub.ModelStatistics(asked)).model_stats
        return model.inference_stats

    before = await stats()
    for count in (1, 8, 64):
        await stub.ModelInfer(text_request(*[f"sentence number {i}" for i in range(count)]))
    after = await stats()
    assert len(read_ns) == len(tokenization_ns) == 3
    counted = after.compute_input.ns - before.compute_input.ns
    assert after.compute_input.count - before.compute_input.count == 3
    # at least the reading and the tokenizing (the server's clock runs around both) ...
    assert counted >= sum(read_ns) + sum(tokenization_ns)
    # ... and no more than the requests took
    assert counted <= after.success.ns - before.success.ns

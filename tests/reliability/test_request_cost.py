"""Issue 16's request-cost defects, each on a real server: a small request may not cost
gigabytes or stall other callers, identifiers are bounded, shapes that overflow and over-long
texts are refused from cheap facts, and errors name the fields of the protocol used.

Around each amplification case the server's peak resident memory (VmHWM, reset through
/proc/PID/clear_refs) and a concurrent one-text caller's worst latency are measured against
the issue's bounds: these bound the server, they are not timings of our own speed.
"""

from __future__ import annotations

import contextlib
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from bertserve.inference import grpc_service_pb2 as v2
from bertserve.inference import grpc_service_pb2_grpc
from bertserve.v1 import bertserve_pb2 as pb
from bertserve.v1 import bertserve_pb2_grpc
from servers import ServerProcess, start_server

MAX_GROWTH_BYTES = 400 * 2**20  # issue 16: peak RSS at most +400 MB
MAX_STALL_S = 1.5  # issue 16: a concurrent one-text caller waits at most 1.5 s
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 64 * 2**20),
    ("grpc.max_receive_message_length", 64 * 2**20),
]
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(scope="module")
def server(model_repo) -> Iterator[ServerProcess]:
    server = start_server(model_repo, "--max-request-bytes", str(32 * 2**20))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def channel(server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.target, options=CHANNEL_OPTIONS) as channel:
        yield channel


@pytest.fixture(scope="module")
def stub(channel) -> bertserve_pb2_grpc.BertServiceStub:
    return bertserve_pb2_grpc.BertServiceStub(channel)


@pytest.fixture(scope="module")
def v2_stub(channel) -> grpc_service_pb2_grpc.GRPCInferenceServiceStub:
    return grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} for process {pid}")


# A one-text caller in a process of its own (a thread here would share the GIL with this
# process's own serializing of the big requests): prints "ready", then on a line from stdin
# its worst latency and call count.
PROBE = """
import sys, threading, time, grpc
from bertserve.v1 import bertserve_pb2 as pb, bertserve_pb2_grpc
stub = bertserve_pb2_grpc.BertServiceStub(grpc.insecure_channel(sys.argv[1]))
request = pb.EmbedRequest(texts=["hello there"])
stub.Embed(request, timeout=60)
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
print("ready", flush=True)
worst, calls = 0.0, 0
while not stop.is_set():
    started = time.monotonic()
    stub.Embed(request, timeout=60)
    worst, calls = max(worst, time.monotonic() - started), calls + 1
print(worst, calls, flush=True)
"""


@contextlib.contextmanager
def bounded(server: ServerProcess, figures: dict, name: str) -> Iterator[None]:
    """Assert the server's peak RSS grows at most MAX_GROWTH_BYTES and a one-text caller on
    its own connection never waits over MAX_STALL_S while the body runs; record both."""
    pid = server.process.pid
    probe = subprocess.Popen(
        [sys.executable, "-c", PROBE, server.target],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert probe.stdout is not None and probe.stdin is not None
    try:
        assert probe.stdout.readline().strip() == "ready"
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
        before = _status(pid, "VmRSS")
        yield
        growth = _status(pid, "VmHWM") - before
        probe.stdin.write("stop\n")
        probe.stdin.flush()
        worst, calls = probe.stdout.readline().split()
    finally:
        probe.kill()
        probe.wait()
    figures[f"request_cost.{name}"] = {
        "peak_rss_growth_mib": round(growth / 2**20, 1),
        "one_text_caller_worst_s": round(float(worst), 3),
        "one_text_calls": int(calls),
    }
    assert growth <= MAX_GROWTH_BYTES, f"peak RSS grew {growth / 2**20:.0f} MiB"
    assert int(calls) > 0 and float(worst) <= MAX_STALL_S, f"a one-text caller waited {worst}s"


def refused(call, request, code=INVALID, **kwargs) -> str:
    with pytest.raises(grpc.RpcError) as error:
        call(request, timeout=120, **kwargs)
    assert error.value.code() == code, error.value.details()
    return error.value.details()


def packed(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def text_request(*texts: str, outputs: tuple[str, ...] = ()) -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(model_name="minilm.features")
    request.inputs.add(name="TEXT", datatype="BYTES", shape=[len(texts)])
    request.raw_input_contents.append(packed(*(t.encode() for t in texts)))
    for name in outputs:
        request.outputs.add(name=name)
    return request


# -- 1: the v2 answer is sized with its padding ------------------------------------------------


def test_a_v2_answer_is_sized_with_its_padding_before_any_work(server, figures, v2_stub):
    request = text_request(" ".join(["word"] * 508), *["a"] * 250, outputs=("token_embeddings",))
    request.parameters["binary_data_output"].bool_param = False
    assert request.ByteSize() < 5000
    with bounded(server, figures, "v2_padding"):
        message = refused(v2_stub.ModelInfer, request, grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert "would be" in message  # refused from the estimate, not after building it
        (answer,) = v2_stub.ModelStreamInfer(iter([request]), timeout=120)
    assert answer.error_message.startswith("RESOURCE_EXHAUSTED: the answer would be")


# -- 2 and 12: identifiers are small -----------------------------------------------------------


def test_a_long_id_or_model_name_is_refused_and_never_copied(server, figures, stub, v2_stub):
    with bounded(server, figures, "long_id"):
        big = pb.EmbedRequest(id="x" * (6 << 20), texts=["a " * 298], token_embeddings=True)
        message = refused(stub.Embed, big)
        assert message == f"id: {6 << 20} bytes, longer than allowed; at most 256 bytes"
        streamed = pb.EmbedRequest(id="y" * (4 << 20) + "z", texts=["paris"])
        (answer,) = stub.EmbedStream(iter([streamed]), timeout=120)
        assert answer.error.code == INVALID.value[0] and len(answer.id) <= 256
    name = "m" * 10_000
    assert "at most 256 bytes" in refused(stub.Embed, pb.EmbedRequest(model=name, texts=["a"]))
    assert "model_name: 10000 bytes" in refused(
        v2_stub.ModelInfer, v2.ModelInferRequest(model_name=name)
    )


def test_every_stream_chunk_stays_under_the_4_mib_limit_with_the_longest_id(stub):
    request = pb.EmbedRequest(
        id="i" * 256,
        texts=["paris " * 500] * 2,  # 12 MiB: several chunks
        truncate=True,
        token_embeddings=True,
        all_layers=True,
    )
    chunks = list(stub.EmbedStream(iter([request]), timeout=120))
    assert len(chunks) > 1 and chunks[-1].last
    assert all(c.id == request.id and c.ByteSize() < 4 * 2**20 for c in chunks)


# -- 3: Tokenize bounds its padded answer before tokenizing ------------------------------------


def test_tokenize_refuses_a_padded_answer_before_tokenizing(server, figures, stub):
    request = pb.TokenizeRequest(texts=["a"] * 16_000, pad_to=512)
    assert request.ByteSize() < 50_000
    with bounded(server, figures, "tokenize_pad_to"):
        message = refused(stub.Tokenize, request, grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert "would be" in message and "pad_to" in message


# -- 4: a long text costs what the model's limit needs -----------------------------------------


def test_truncate_tokenizes_only_a_bounded_prefix(server, figures, stub):
    with bounded(server, figures, "long_text"):
        answer = stub.Embed(pb.EmbedRequest(texts=["!" * (4 << 20)], truncate=True), timeout=120)
        assert list(answer.lengths) == [512] and answer.truncated[0] > 0
        cjk = pb.EmbedRequest(texts=["中文" * (1 << 20)])
        message = refused(stub.Embed, cjk)
    assert message.startswith("texts[0]: over 512 tokens") and "truncate" in message


def test_a_cut_prefix_gives_the_tokens_the_whole_text_gives(stub):
    long_text = "the quick brown fox jumps over the lazy dog " * 2000  # 88 KB
    head = " ".join(long_text.split()[:600])  # within the bound: tokenized whole
    whole = stub.Tokenize(pb.TokenizeRequest(texts=[head], truncate=True), timeout=60)
    cut = stub.Tokenize(pb.TokenizeRequest(texts=[long_text], truncate=True), timeout=60)
    assert list(cut.encodings[0].input_ids) == list(whole.encodings[0].input_ids)


# -- 5: big repeated fields are count-checked before they are walked ---------------------------


def test_big_repeated_fields_are_refused_by_their_count(server, figures, stub, v2_stub):
    with bounded(server, figures, "big_repeated_fields"):
        raw = v2.ModelInferRequest(model_name="minilm.features")
        raw.inputs.add(name="TEXT", datatype="BYTES", shape=[4_000_000])
        raw.raw_input_contents.append(packed(b"") * 4_000_000)
        assert "TEXT: shape [4000000]: a batch of 4,000,000" in refused(v2_stub.ModelInfer, raw)
        layers = text_request("a", outputs=("hidden_states",))
        layers.parameters["layers"].string_param = ",".join(["1"] * 7_500_000)
        assert "parameters['layers']: 7500000 entries" in refused(v2_stub.ModelInfer, layers)
        v1_layers = pb.EmbedRequest(texts=["a"], layers=[0] * 15_000_000)
        assert "layers: 15000000 entries" in refused(stub.Embed, v1_layers)
        ids = pb.TokenSequence(input_ids=[101] + [1000] * 15_000_000)
        answer = stub.Embed(pb.EmbedRequest(sequences=[ids], truncate=True), timeout=120)
        assert list(answer.lengths) == [512] and answer.truncated[0] == 15_000_001 - 512


# -- 6: shapes whose element count overflows ---------------------------------------------------


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "contents"])
@pytest.mark.parametrize("shape", [[2**32, 2**32], [2**62, 4], [2**63 - 1, 2], [1, 2**62]])
def test_a_shape_that_overflows_is_invalid_argument(v2_stub, shape, raw):
    request = v2.ModelInferRequest(model_name="minilm.features")
    tensor = request.inputs.add(name="input_ids", datatype="INT64", shape=shape)
    if raw:
        request.raw_input_contents.append(np.array([101, 102], "<i8").tobytes())
    else:  # no elements: numpy's wrapped product (0) once matched and reshape failed
        tensor.contents.SetInParent()
    message = refused(v2_stub.ModelInfer, request)
    assert message.startswith("input_ids: ") and f"shape {shape}" in message
    assert "says -" not in message and "says 0" not in message


# -- 9: the same validation on both protocols --------------------------------------------------


def test_an_all_zero_attention_mask_is_refused_on_v1_as_on_v2(stub):
    sequence = pb.TokenSequence(input_ids=[101, 7592, 102], attention_mask=[0, 0, 0])
    request = pb.EmbedRequest(sequences=[sequence], pooling=pb.POOLING_MEAN, normalize=True)
    assert refused(stub.Embed, request).startswith("sequences[0].attention_mask: all 0")


# -- 12: errors in the words of the protocol used ----------------------------------------------


def test_forty_thousand_texts_are_refused_as_texts(stub, v2_stub):
    message = refused(stub.Embed, pb.EmbedRequest(texts=["a"] * 40_000))
    assert message.startswith("texts: 40000 in one request; allowed 1..32768")
    message = refused(v2_stub.ModelInfer, text_request(*["a"] * 40_000))
    assert message.startswith("TEXT: 40000 in one request; allowed 1..32768")


def test_v2_errors_name_v2_inputs_and_parameters(v2_stub):
    assert refused(v2_stub.ModelInfer, text_request("a", "")).startswith("TEXT[1]: empty string")
    long = refused(v2_stub.ModelInfer, text_request("a", " ".join(["word"] * 600)))
    assert long.startswith("TEXT[1]: 602 tokens")
    layers = text_request("a", outputs=("hidden_states",))
    layers.parameters["layers"].string_param = "9"
    assert refused(v2_stub.ModelInfer, layers).startswith("parameters['layers']=9: no such layer")
    ids = v2.ModelInferRequest(model_name="minilm.features")
    ids.inputs.add(name="input_ids", datatype="INT64", shape=[1, 2000])
    ids.raw_input_contents.append(np.full(2000, 101, "<i8").tobytes())
    assert refused(v2_stub.ModelInfer, ids).startswith("input_ids[0]: 2000 tokens")


# -- 13: EmbedStream refuses an id already in flight -------------------------------------------


def test_embed_stream_refuses_an_id_already_in_flight(stub):
    # the first is tokenized off the event loop, so the second is read while it is in flight
    first = pb.EmbedRequest(id="same", texts=["paris and rome " * 40] * 64)
    second = pb.EmbedRequest(id="same", texts=["paris"])
    answers = list(stub.EmbedStream(iter([first, second]), timeout=120))
    errors = [a for a in answers if a.HasField("error")]
    assert len(errors) == 1 and "already in flight" in errors[0].error.message
    assert errors[0].error.code == INVALID.value[0]
    assert [a for a in answers if a.last and not a.HasField("error")][0].id == "same"

"""Bad input never takes the v2 front door down: hypothesis builds ModelInferRequests from
valid and invalid names, datatypes, shapes, contents and parameters (and raw garbage bytes);
every answer carries a documented code and a message, never INTERNAL or UNKNOWN, and a good
request between the bad ones still gets exactly the right answer."""

from __future__ import annotations

import struct

import grpc
import numpy as np
import pytest
from bertserve.inference import grpc_service_pb2 as v2
from bertserve.inference import grpc_service_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

DOCUMENTED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
INPUTS = ["TEXT", "TEXT_PAIR", "input_ids", "attention_mask", "token_type_ids", "SPANS", "text", ""]
OUTPUTS = [
    "sentence_embedding",
    "token_embeddings",
    "hidden_states",
    "hidden_states.3",
    "hidden_states.-1",
    "hidden_states.9",
    "lengths",
    "logits",
    "probabilities",
    "label",
    "",
]
PARAMETERS = ["pooling", "layers", "aggregation", "normalize", "truncate", "datatype", "x"]
PARAMETERS += ["long_text", "chunk_tokens", "chunk_overlap", "chunk_pooling", "split"]
VALUES = st.one_of(
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.sampled_from(["cls", "mean", "all", "-1,2", "concat_last_4", "FP16", "BF16", "", "zz"]),
    st.sampled_from(["chunk", "error", "truncate", "max", "first", "sentences"]),
    st.floats(allow_nan=True),
)


def packed(texts: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(t)) + t for t in texts)


@st.composite
def requests(draw) -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(
        model_name=draw(st.sampled_from(["minilm", "minilm-sentiment", "nope", ""])),
        # no version that is not loaded yet: loading it would change the shared server for
        # the tests after this one (max_loaded_variants)
        model_version=draw(st.sampled_from(["", "fp32-opt", "7"])),
        id=draw(st.text(max_size=8)),
    )
    raw = draw(st.booleans())
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(INPUTS))
        datatype = draw(st.sampled_from(["BYTES", "INT64", "INT32", "FP32", ""]))
        shape = draw(st.lists(st.integers(-1, 4), max_size=3))
        tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
        count = max(0, int(np.prod(shape))) if shape else 0
        if datatype == "BYTES":
            texts = draw(st.lists(st.binary(max_size=40), min_size=count, max_size=count + 1))
            if raw:
                request.raw_input_contents.append(
                    draw(st.one_of(st.just(packed(texts)), st.binary(max_size=64)))
                )
            else:
                tensor.contents.bytes_contents.extend(texts)
        else:
            ids = draw(st.lists(st.integers(-5, 40000), min_size=count, max_size=count + 1))
            if raw:
                request.raw_input_contents.append(np.asarray(ids, dtype="<i8").tobytes())
            else:
                tensor.contents.int64_contents.extend(ids)
    for name in draw(st.lists(st.sampled_from(OUTPUTS), max_size=3)):
        request.outputs.add(name=name)
    for name in draw(st.lists(st.sampled_from(PARAMETERS), max_size=3, unique=True)):
        value = draw(VALUES)
        kind = {bool: "bool_param", int: "int64_param", str: "string_param"}.get(
            type(value), "double_param"
        )
        setattr(request.parameters[name], kind, value)
    return request


def good_request() -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(model_name="minilm", model_version="fp32-opt")
    request.inputs.add(name="TEXT", datatype="BYTES", shape=[2])
    request.raw_input_contents.append(packed([b"I love Paris", b"a probe between bad ones"]))
    return request


@pytest.fixture(scope="module")
def fuzz(classifier_server, figures):
    seen: dict = {"sent": 0, "codes": {}}
    with grpc.insecure_channel(classifier_server.target) as channel:
        stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
        reference = stub.ModelInfer(good_request(), timeout=60).raw_output_contents[0]
        garbage = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        yield stub, garbage, reference, seen
    alive = classifier_server.process.poll() is None
    figures["oip_fuzz"] = {**seen, "probes_correct": seen["sent"] // 25, "server_alive": alive}
    assert alive, classifier_server.output()[-3000:]


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=requests(), garbage=st.binary(max_size=64))
def test_fuzzed_requests_get_documented_codes(fuzz, request, garbage):
    stub, raw_call, reference, seen = fuzz
    for call, message in ((stub.ModelInfer, request), (raw_call, garbage)):
        try:
            call(message, timeout=60)
            code = grpc.StatusCode.OK
        except grpc.RpcError as error:
            code = error.code()
            assert code in DOCUMENTED, (code, error.details(), message)
            assert error.details(), (code, message)
        seen["codes"][code.name] = seen["codes"].get(code.name, 0) + 1
    seen["sent"] += 1
    if seen["sent"] % 25 == 0:  # the server still answers a good request exactly
        assert stub.ModelInfer(good_request(), timeout=60).raw_output_contents[0] == reference


# -- shapes, raw contents, parameters and outputs at and past their limits -------------------

MAX_LAYER_ENTRIES = 256  # server/core/request.py; the v2 `layers` parameter's list limit
MAX_BATCH = 65536  # max_request_sequences, the classifier server's default
KINDS = ("bool_param", "int64_param", "string_param", "double_param", None)
# each known parameter -> the kinds it takes, a valid value of each
KNOWN = {
    "pooling": {"string_param": "mean"},
    "layers": {"string_param": "-1,-2", "int64_param": -1},
    "aggregation": {"string_param": "last"},
    "normalize": {"bool_param": True},
    "truncate": {"bool_param": True},
    "datatype": {"string_param": "FP32"},
    "binary_data_output": {"bool_param": True},
    "long_text": {"string_param": "truncate"},  # not chunk: the fuzz sends ids too
}
WRONG = {
    "bool_param": True,
    "int64_param": 2**62,
    "string_param": "x" * 70_000,
    "double_param": 1e308,
}
BAD_SHAPES = [
    [],
    [0],
    [-1],
    [-(2**63)],
    [MAX_BATCH + 1],
    [2**32, 2**32],
    [2**62, 4],
    [2**63 - 1, 2],
    [1, 2],
    [1, 0],
    [1, 1, 1],
]
BAD_ID_SHAPES = [[], [3], [0, 3], [1, -1], [2**32, 2**32], [2**62, 4], [2**63 - 1, 2], [1, 2**40]]


def base_request(draw, features: bool) -> tuple[v2.ModelInferRequest, int]:
    """A valid request for minilm or minilm.features (texts or ids) and its batch."""
    request = v2.ModelInferRequest(
        model_name="minilm.features" if features else "minilm",
        model_version=draw(st.sampled_from(["", "fp32-opt"])),
    )
    words = st.sampled_from([b"I love Paris", b"a", b"\xc3\xa9t\xc3\xa9"])
    texts = draw(st.lists(words, min_size=1, max_size=3))
    if features and draw(st.booleans()):
        ids = [[101, 1045, 2293, 3000, 102][: 2 + i] + [0] * (3 - i) for i in range(len(texts))]
        shape = [len(ids), 5]
        request.inputs.add(name="input_ids", datatype="INT64", shape=shape)
        request.inputs.add(name="attention_mask", datatype="INT64", shape=shape)
        mask = [[int(v != 0) for v in row] for row in ids]
        request.raw_input_contents.append(np.asarray(ids, dtype="<i8").tobytes())
        request.raw_input_contents.append(np.asarray(mask, dtype="<i8").tobytes())
    else:
        request.inputs.add(name="TEXT", datatype="BYTES", shape=[len(texts), 1])
        request.raw_input_contents.append(packed(texts))
    return request, len(texts)


@st.composite
def limit_cases(draw) -> tuple[v2.ModelInferRequest, grpc.StatusCode, int]:
    """A valid request with one thing pushed to or past a limit, the code it must get and
    the batch an OK answer must have."""
    features = draw(st.booleans())
    request, batch = base_request(draw, features)
    ok, bad = grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT
    case = draw(st.sampled_from(["shape", "raw", "prefix", "param", "layers", "output", "name"]))
    tensor, raw = request.inputs[0], request.raw_input_contents
    if case == "shape":
        shapes = BAD_SHAPES if tensor.datatype == "BYTES" else BAD_ID_SHAPES
        del tensor.shape[:]
        tensor.shape.extend(draw(st.sampled_from(shapes)))
        return request, bad, 0
    if case == "raw":  # the raw content one element short or long, or a few bytes off
        delta = draw(st.sampled_from([-9, -8, -1, 1, 4, 8]))
        data = raw[0] + b"\0" * delta if delta > 0 else raw[0][:delta]
        raw[0] = data
        return request, bad, 0
    if case == "prefix":  # BYTES: a length prefix claiming more or fewer bytes than follow
        del request.inputs[:], raw[:]
        request.inputs.add(name="TEXT", datatype="BYTES", shape=[1])
        claim = draw(st.sampled_from([0, 3, 4, 5, 2**31, 2**32 - 1]))
        tail = draw(st.sampled_from([b"", b"\x00", struct.pack("<I", 0)]))
        raw.append(struct.pack("<I", claim) + b"abcd" + tail)
        return request, ok if claim == 4 + len(tail) else bad, 1
    if case == "param":  # every known name with every kind; unknown and triton_* names
        name = draw(
            st.sampled_from([*KNOWN, "x", "", "Pooling", "triton_max_batch_size", "triton_" * 50])
            | st.text(max_size=20)
        )
        kind = draw(st.sampled_from(KINDS))
        value, parameter = None, request.parameters[name]  # kind None: an empty value
        if kind is not None:
            value = KNOWN.get(name, {}).get(kind, WRONG[kind])
            if draw(st.booleans()):  # the wrong value of that kind (a huge string, 2**62...)
                value = WRONG[kind]
            setattr(parameter, kind, value)
        if name == "triton_enable_empty_final_response":  # sent by perf_analyzer: ignored
            return request, ok, batch
        if name not in KNOWN or kind not in KNOWN[name]:
            return request, bad, 0
        # bools are all valid; an int layer is only checked when hidden_states are asked for
        if kind == "bool_param" or (name == "layers" and kind == "int64_param"):
            return request, ok, batch
        return request, ok if value == KNOWN[name][kind] else bad, batch
    if case == "layers":  # a list of n layers, around MAX_LAYER_ENTRIES
        n = draw(st.sampled_from([MAX_LAYER_ENTRIES - 1, MAX_LAYER_ENTRIES, MAX_LAYER_ENTRIES + 1]))
        layer = draw(st.sampled_from(["-1", "0", "3", "99", "x", ""]))
        request.parameters["layers"].string_param = ",".join([layer] * n)
        # one short text: v2 returns each layer as listed, and 256 of 3 long texts would be
        # over the client's 4 MiB receive limit
        del request.inputs[:], raw[:]
        request.inputs.add(name="TEXT", datatype="BYTES", shape=[1])
        raw.append(packed([b"a"]))
        batch = 1
        if features:
            request.outputs.add(name="hidden_states")
        if n > MAX_LAYER_ENTRIES or layer in ("x", ""):
            return request, bad, 0
        return request, ok if layer != "99" or not features else bad, batch
    if case == "output":
        name = draw(st.sampled_from(OUTPUTS + ["sentence_embedding", "o" * 5000]))
        request.outputs.add(name=name)
        return request, None, batch  # which outputs exist differs by model: code only
    # the model name and version at their documented limit of 256 bytes
    size = draw(st.sampled_from([255, 256, 257, 5000]))
    field = draw(st.sampled_from(["model_name", "model_version"]))
    setattr(request, field, "é" * (size // 2) + "a" * (size % 2))
    not_found = grpc.StatusCode.NOT_FOUND
    return request, bad if size > 256 else (not_found if field == "model_name" else None), 0


@settings(
    max_examples=250,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(case=limit_cases())
def test_shapes_parameters_and_names_at_their_limits(fuzz, case):
    """Each case gets its exact code (None: any documented one) with a short message that
    names what was wrong; OK answers have the batch asked for; good requests stay exact."""
    stub, _, reference, seen = fuzz
    request, expected, batch = case
    try:
        answer = stub.ModelInfer(request, timeout=60)
        code = grpc.StatusCode.OK
    except grpc.RpcError as error:
        code = error.code()
        details = error.details() or ""
        assert code in DOCUMENTED, (code, details[:300])
        assert 10 < len(details) < 2048, (code, details[:300])
    assert expected is None or code == expected, (code, expected, request.model_name[:20])
    if code == grpc.StatusCode.OK and batch:
        assert all(output.shape[0] == batch for output in answer.outputs), answer.outputs
    seen["sent"] += 1
    seen["codes"][code.name] = seen["codes"].get(code.name, 0) + 1
    if seen["sent"] % 25 == 0:
        assert stub.ModelInfer(good_request(), timeout=60).raw_output_contents[0] == reference

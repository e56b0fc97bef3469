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
INPUTS = ["TEXT", "TEXT_PAIR", "input_ids", "attention_mask", "token_type_ids", "text", ""]
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
VALUES = st.one_of(
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.sampled_from(["cls", "mean", "all", "-1,2", "concat_last_4", "FP16", "BF16", "", "zz"]),
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
def fuzz(classifier_server):
    with grpc.insecure_channel(classifier_server.target) as channel:
        stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
        reference = stub.ModelInfer(good_request(), timeout=60).raw_output_contents[0]
        garbage = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        yield stub, garbage, reference, {"sent": 0, "codes": {}}


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

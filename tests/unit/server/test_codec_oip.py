"""Open Inference Protocol protobuf <-> core types: no model, no server."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from bertserve.inference import grpc_service_pb2 as v2
from bertserve.server.core.request import MAX_LAYER_ENTRIES, Options, Result, Texts, Tokens
from bertserve.server.errors import InvalidArgument
from bertserve.server.oip import answer, codec


def refused(call, *args) -> str:
    with pytest.raises(InvalidArgument) as caught:
        call(*args)
    return caught.value.render(codec.field_name)


def packed(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(i)) + i for i in items)


def ids_request(ids: np.ndarray, mask: np.ndarray | None = None) -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(model_name="m")
    for name, values in (("input_ids", ids), ("attention_mask", mask)):
        if values is not None:
            request.inputs.add(name=name, datatype="INT64", shape=list(values.shape))
            request.raw_input_contents.append(values.astype("<i8").tobytes())
    return request


def test_field_paths_read_as_v2_inputs_and_parameters():
    assert codec.field_name(("sequences", 0, "input_ids", 3)) == "input_ids[0][3]"
    assert codec.field_name(("sequences", 2, "attention_mask")) == "attention_mask[2]"
    assert codec.field_name(("texts", 2)) == "TEXT[2]"
    assert codec.field_name(("pairs", 0)) == "TEXT_PAIR[0]"
    assert codec.field_name(("layers", 4)) == "parameters['layers']"
    assert codec.field_name(("aggregate",)) == "parameters['aggregation']"
    assert codec.field_name(("texts",)) == "TEXT"


def test_parameters_are_read_in_one_place():
    request = v2.ModelInferRequest()
    request.parameters["layers"].string_param = "-1,2"
    request.parameters["datatype"].string_param = "BF16"
    parameters = codec.read_parameters(request.parameters)
    assert parameters.layers == (-1, 2) and parameters.datatype == "BF16"
    request.parameters["layers"].string_param = "all"
    assert codec.read_parameters(request.parameters).layers is None
    request.parameters["layers"].string_param = ",".join(["1"] * 7_500_000)
    assert refused(codec.read_parameters, request.parameters) == (
        f"parameters['layers']: 7500000 entries; allowed at most {MAX_LAYER_ENTRIES}"
    )


@pytest.mark.parametrize(
    "shape, says",
    [
        ([2**32, 2**32], "a batch of 4,294,967,296"),
        ([2**62, 4], "a batch of"),
        ([2**63 - 1, 2], "a batch of"),
        ([1, 2**62], "needs 36893488147419103232"),
    ],
)
def test_shapes_that_overflow_int64_are_invalid_argument(shape, says):
    request = v2.ModelInferRequest()
    request.inputs.add(name="input_ids", datatype="INT64", shape=shape)
    request.raw_input_contents.append(b"\0" * 16)
    assert says in refused(codec.read_inputs, request, 1000)


def test_a_bytes_tensor_is_count_checked_before_it_is_walked():
    request = v2.ModelInferRequest()
    request.inputs.add(name="TEXT", datatype="BYTES", shape=[4_000_000])
    request.raw_input_contents.append(packed(b"") * 4_000_000)
    assert "a batch of 4,000,000; allowed 1..65,536" in refused(codec.read_inputs, request, 65536)
    request.inputs[0].shape[0] = 1  # the shape says one: the walk stops after it
    assert "more than 1 elements" in refused(codec.read_inputs, request, 65536)


def test_token_inputs_become_core_sequences_without_the_trailing_padding():
    ids = np.array([[101, 7, 102, 0], [101, 102, 0, 0]])
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]])
    request = ids_request(ids, mask)
    core = codec.core_request(request, codec.Parameters(), ["sentence_embedding"], "fp32", 10)
    assert isinstance(core.inputs, Tokens)
    assert [list(s.input_ids) for s in core.inputs.sequences] == [[101, 7, 102], [101, 102]]
    assert core.options == Options(pooling="model")
    zeros = codec.core_request(
        ids_request(ids, np.zeros_like(mask)), codec.Parameters(), ["lengths"], "", 10
    )
    assert len(zeros.inputs.sequences[0].input_ids) == 4  # kept whole: the core refuses it


def test_outputs_map_to_core_options():
    request = v2.ModelInferRequest(model_name="m")
    request.inputs.add(name="TEXT", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(packed("héllo".encode()))
    names = ["hidden_states", "hidden_states.2", "token_embeddings", "logits"]
    parameters = codec.Parameters(layers=(-1,), truncate=True, datatype="FP16")
    core = codec.core_request(request, parameters, names, "int8", 10)
    assert core.inputs == Texts(["héllo"], None) and core.variant == "int8"
    assert core.options == Options(
        token_embeddings=True,
        pooling="none",
        layers=(-1, 2),
        dtype="float16",
        truncate=True,
        logits=True,
    )


def test_the_answer_pads_token_outputs_to_the_longest():
    result = Result(
        {
            "token_embeddings": np.arange(10, dtype=np.float32).reshape(5, 2),
            "sentence_embedding": np.ones((2, 2), np.float32),
        },
        [3, 2],
        [0, 0],
    )
    names = {"token_embeddings": "token_embeddings", "lengths": "lengths"}
    built = answer.response("id", "m", "fp32", 6, None, names, result, codec.Parameters())
    tokens = np.frombuffer(built.raw_output_contents[0], "<f4").reshape(2, 3, 2)
    assert tokens[1, 2].tolist() == [0, 0] and tokens[1, 1].tolist() == [8, 9]
    assert np.frombuffer(built.raw_output_contents[1], "<i8").tolist() == [3, 2]


def test_inputs_and_outputs_are_checked_against_the_v2_model_asked():
    from pathlib import Path

    from bertserve.server import triton
    from bertserve.server.repository import ModelPackage, VariantPackage

    manifest = {"hidden_size": 8, "num_layers": 2}
    package = ModelPackage("m", {"fp32": VariantPackage("fp32", Path("/nowhere"), manifest)})
    typical, full = (triton.resolve({"m": package}, name) for name in ("m", "m.features"))
    request = ids_request(np.array([[101, 102]]))
    assert "not an input of model 'm'" in refused(codec.read_inputs, request, 10, typical)
    assert list(codec.read_inputs(request, 10, full)) == ["input_ids"]
    core = codec.core_request(request, codec.Parameters(), ["lengths"], "fp32", 10, full)
    assert core.model == "m"  # the repository model behind m.features
    request.outputs.add(name="token_embeddings")
    assert "has no such output" in refused(codec.requested_outputs, request, typical, 2)
    assert codec.requested_outputs(request, full, 2) == {"token_embeddings": "token_embeddings"}
    del request.outputs[:]
    assert codec.requested_outputs(request, typical, 2) == {
        "sentence_embedding": "sentence_embedding"
    }

"""Open Inference Protocol protobuf <-> core types: no model, no server."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from bertserve.inference import grpc_service_pb2 as v2
from bertserve.server.core.request import MAX_LAYER_ENTRIES, Options, Result, Texts, Tokens
from bertserve.server.errors import InvalidArgument
from bertserve.server.oip import answer, codec, inputs


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
    assert says in refused(inputs.read_inputs, request, 1000)


def test_a_bytes_tensor_is_count_checked_before_it_is_walked():
    request = v2.ModelInferRequest()
    request.inputs.add(name="TEXT", datatype="BYTES", shape=[4_000_000])
    request.raw_input_contents.append(packed(b"") * 4_000_000)
    assert "a batch of 4,000,000; allowed 1..65,536" in refused(inputs.read_inputs, request, 65536)
    request.inputs[0].shape[0] = 1  # the shape says one: the walk stops after it
    assert "more than 1 elements" in refused(inputs.read_inputs, request, 65536)


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
    assert "not an input of model 'm'" in refused(inputs.read_inputs, request, 10, typical)
    assert list(inputs.read_inputs(request, 10, full)) == ["input_ids"]
    core = codec.core_request(request, codec.Parameters(), ["lengths"], "fp32", 10, full)
    assert core.model == "m"  # the repository model behind m.features
    request.outputs.add(name="token_embeddings")
    assert "has no such output" in refused(codec.requested_outputs, request, typical, 2)
    assert codec.requested_outputs(request, full, 2) == {"token_embeddings": "token_embeddings"}
    del request.outputs[:]
    assert codec.requested_outputs(request, typical, 2) == {
        "sentence_embedding": "sentence_embedding"
    }


# -- long documents (issue 19) ---------------------------------------------------------------


def text_request(*texts: str) -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(model_name="m.features")
    request.inputs.add(name="TEXT", datatype="BYTES", shape=[len(texts)])
    request.raw_input_contents.append(packed(*(t.encode() for t in texts)))
    return request


def v2_model(name: str):
    from pathlib import Path

    from bertserve.server import triton
    from bertserve.server.repository import ModelPackage, VariantPackage

    manifest = {"hidden_size": 8, "num_layers": 2}
    package = ModelPackage("m", {"fp32": VariantPackage("fp32", Path("/nowhere"), manifest)})
    return triton.resolve({"m": package}, name)


def features_model():
    return v2_model("m.features")


def typical_model():
    return v2_model("m")


def with_spans(request: v2.ModelInferRequest, rows: list[list[int]], datatype: str, raw: bool):
    request.inputs.add(name="SPANS", datatype=datatype, shape=[len(rows), 3])
    values = np.asarray(rows, dtype="<i4" if datatype == "INT32" else "<i8")
    if raw:
        request.raw_input_contents.append(values.tobytes())
    elif datatype == "INT32":
        request.inputs[-1].contents.int_contents.extend(values.ravel().tolist())
    else:
        request.inputs[-1].contents.int64_contents.extend(values.ravel().tolist())
    return request


def test_long_text_parameters_map_to_options():
    request = text_request("a long text")
    params = request.parameters
    params["long_text"].string_param = "chunk"
    params["chunk_tokens"].int64_param = 128
    params["chunk_overlap"].int64_param = 0
    params["chunk_pooling"].string_param = "first"
    parameters = codec.read_parameters(params)
    core = codec.core_request(request, parameters, ["sentence_embedding"], "", 10)
    assert core.options == Options(
        pooling="model",
        long_text="chunk",
        chunk_tokens=128,
        chunk_overlap=0,
        chunk_pooling="first",
    )
    plain = codec.core_request(request, codec.Parameters(), ["sentence_embedding"], "", 10)
    assert (plain.options.long_text, plain.options.chunk_overlap) == ("", None)
    for value in ("truncate", "error"):
        params["long_text"].string_param = value
        assert codec.read_parameters(params).long_text == value


def test_asking_for_chunk_outputs_is_return_chunks_and_pools():
    request = text_request("a")
    chunk = codec.Parameters(pooling="max", long_text="chunk")
    for asked in (["chunk_embeddings"], ["chunk_spans"], ["token_embeddings", "chunk_spans"]):
        options = codec.core_request(request, chunk, asked, "", 10).options
        assert options.return_chunks and options.pooling == "max"
    unasked = codec.core_request(request, chunk, ["token_embeddings"], "", 10)
    assert not unasked.options.return_chunks and unasked.options.pooling == "none"
    assert refused(codec.core_request, request, codec.Parameters(), ["chunk_spans"], "", 10) == (
        "outputs: chunk_spans asked for without parameters['long_text']='chunk'; allowed only "
        "with it"
    )


@pytest.mark.parametrize("datatype", ["INT32", "INT64"])
@pytest.mark.parametrize("raw", [True, False])
def test_spans_input_becomes_core_spans(datatype, raw):
    request = text_request("Hello world. Bye.", "two")
    if not raw:  # contents for every input, or raw for every input
        request.inputs[0].contents.bytes_contents.extend([b"Hello world. Bye.", b"two"])
        del request.raw_input_contents[:]
    with_spans(request, [[0, 0, 12], [0, 13, 17], [1, 0, 3]], datatype, raw)
    names = codec.requested_outputs(request, features_model(), 2)
    assert list(names) == ["sentence_embedding", "span_embeddings", "span_offsets"]
    core = codec.core_request(request, codec.Parameters(), list(names.values()), "", 10)
    assert core.options.spans == ((0, 0, 12), (0, 13, 17), (1, 0, 3))
    assert core.inputs == Texts(["Hello world. Bye.", "two"], None)


def test_split_asks_for_spans_without_the_input():
    request = text_request("One. Two.")
    request.parameters["split"].string_param = "sentences"
    parameters = codec.read_parameters(request.parameters)
    names = codec.requested_outputs(request, features_model(), 2)
    assert "span_embeddings" in names
    typical = typical_model()
    assert refused(
        codec.core_request, request, parameters, ["sentence_embedding"], "", 10, typical
    ) == (
        "parameters['split']: late chunking answers span_embeddings, an output of model "
        "'m.features', not of 'm'; allowed: send the request there"
    )
    core = codec.core_request(request, parameters, ["span_embeddings"], "", 10)
    assert (core.options.split, core.options.spans, core.options.pooling) == (
        "sentences",
        (),
        "none",
    )


def test_bad_long_text_parameters_are_named_in_v2_words():
    cases = [
        (
            "long_text",
            "string_param",
            "split",
            "parameters['long_text']='split': allowed one of ['truncate', 'error', 'chunk']",
        ),
        (
            "chunk_pooling",
            "string_param",
            "sum",
            "parameters['chunk_pooling']='sum': allowed one of ['mean', 'max', 'first']",
        ),
        (
            "split",
            "string_param",
            "words",
            "parameters['split']='words': allowed one of ['sentences']",
        ),
        ("chunk_tokens", "int64_param", -1, "parameters['chunk_tokens']=-1: negative; allowed 0"),
        ("chunk_overlap", "int64_param", -5, "parameters['chunk_overlap']=-5: negative; allowed"),
        (
            "chunk_tokens",
            "string_param",
            "128",
            "parameters['chunk_tokens']: a string_param value; allowed int64_param",
        ),
        (
            "long_text",
            "bool_param",
            True,
            "parameters['long_text']: a bool_param value; allowed string_param",
        ),
    ]
    for name, kind, value, says in cases:
        request = v2.ModelInferRequest()
        setattr(request.parameters[name], kind, value)
        assert refused(codec.read_parameters, request.parameters).startswith(says), name


def test_bad_spans_are_named_in_v2_words():
    model = features_model()
    bad = with_spans(text_request("abc"), [[0, 0, 2], [0, -1, 3]], "INT64", True)
    assert refused(codec.core_request, bad, codec.Parameters(), ["span_embeddings"], "", 10) == (
        "SPANS[1][1]=-1: negative; allowed 0 or more (rows [text, start, end) in Unicode code "
        "points)"
    )
    wide = text_request("abc")
    wide.inputs.add(name="SPANS", datatype="INT64", shape=[1, 2])
    wide.raw_input_contents.append(np.zeros(2, "<i8").tobytes())
    assert refused(inputs.read_inputs, wide, 10, model).startswith(
        "SPANS: shape [1, 2]; allowed [spans, 3] (rows [text, start, end)), each at least 1"
    )
    floats = text_request("abc")
    floats.inputs.add(name="SPANS", datatype="FP32", shape=[1, 3])
    floats.raw_input_contents.append(np.zeros(3, "<f4").tobytes())
    assert refused(inputs.read_inputs, floats, 10, model) == (
        "SPANS: datatype 'FP32'; allowed INT32 or INT64"
    )
    short = with_spans(text_request("abc"), [[0, 0, 2]], "INT32", True)
    short.inputs[-1].shape[0] = 2
    assert refused(inputs.read_inputs, short, 10, model) == (
        "SPANS: 12 bytes of raw content; shape [2, 3] of INT32 needs 24"
    )
    huge = with_spans(text_request("abc"), [[0, 0, 2]], "INT64", True)
    huge.inputs[-1].shape[0] = 2**62  # counted in Python ints before anything is walked
    assert "shape [4611686018427387904, 3] of INT64 needs" in refused(
        inputs.read_inputs, huge, 10, model
    )
    typical = v2.ModelInferRequest(model_name="m")
    with_spans(typical, [[0, 0, 1]], "INT64", True)
    assert "not an input of model 'm'" in refused(inputs.read_inputs, typical, 10, typical_model())


def test_spans_and_span_outputs_go_together():
    request = with_spans(text_request("abc"), [[0, 0, 2]], "INT64", True)
    assert refused(
        codec.core_request, request, codec.Parameters(), ["sentence_embedding"], "", 10
    ).startswith("SPANS given, but no span output asked for; allowed: ask for span_embeddings")
    plain = text_request("abc")
    assert refused(
        codec.core_request, plain, codec.Parameters(), ["span_offsets"], "", 10
    ).startswith("outputs: span_offsets asked for without spans; allowed: send the SPANS input")


def test_core_errors_about_long_text_read_as_v2_names():
    def named(field) -> str:
        return codec.field_name(field)

    assert named(("chunk_overlap",)) == "parameters['chunk_overlap']"
    assert named(("chunk_tokens",)) == "parameters['chunk_tokens']"
    assert named(("long_text",)) == "parameters['long_text']"
    assert named(("split",)) == "parameters['split']"
    assert named(("spans", 3, "end")) == "SPANS[3][2]"
    assert named(("spans", 1)) == "SPANS[1]"
    assert named(("spans",)) == "SPANS"
    assert named(("return_chunks",)) == "outputs chunk_embeddings"
    assert named(("logits",)) == "outputs logits"
    error = InvalidArgument("=600: allowed 0..509", ("chunk_overlap",))
    assert error.render(codec.field_name) == "parameters['chunk_overlap']=600: allowed 0..509"


def long_result() -> Result:
    return Result(
        {
            "sentence_embedding": np.ones((1, 2), np.float32),
            "chunk_embeddings": np.full((3, 2), 0.25, np.float32),
            "chunk_spans": np.array([[0, 0, 10], [0, 8, 20], [0, 18, 25]], np.int32),
            "span_embeddings": np.full((2, 2), 0.5, np.float32),
            "span_offsets": np.array([[0, 0, 12], [0, 13, 25]], np.int32),
        },
        [40],
        [0],
    )


@pytest.mark.parametrize("datatype", ["FP32", "FP16", "BF16"])
def test_long_text_outputs_in_the_answer_keep_int32(datatype):
    names = {n: n for n in ("chunk_embeddings", "chunk_spans", "span_embeddings", "span_offsets")}
    parameters = codec.Parameters(datatype=datatype)
    built = answer.response("id", "m", "fp32", 6, None, names, long_result(), parameters)
    shown = {o.name: (o.datatype, list(o.shape)) for o in built.outputs}
    assert shown == {
        "chunk_embeddings": (datatype, [3, 2]),
        "chunk_spans": ("INT32", [3, 3]),
        "span_embeddings": (datatype, [2, 2]),
        "span_offsets": ("INT32", [2, 3]),
    }
    spans = np.frombuffer(built.raw_output_contents[1], "<i4").reshape(3, 3)
    np.testing.assert_array_equal(spans, long_result().outputs["chunk_spans"])
    assert len(built.raw_output_contents[2]) == 2 * 2 * (4 if datatype == "FP32" else 2)


def test_int32_outputs_as_typed_contents():
    names = {"span_offsets": "span_offsets", "span_embeddings": "span_embeddings"}
    parameters = codec.Parameters(binary_data_output=False)
    built = answer.response("id", "m", "fp32", 6, None, names, long_result(), parameters)
    assert not built.raw_output_contents
    assert list(built.outputs[0].contents.int_contents) == [0, 0, 12, 0, 13, 25]
    assert list(built.outputs[1].contents.fp32_contents) == [0.5] * 4

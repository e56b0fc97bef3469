"""The client's pure parts: tensor decoding, chunk assembly, options, targets, errors."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from bertserve.client import health as health_codec
from bertserve.client.channel import resolve_target
from bertserve.client.errors import BertserveError, status_code
from bertserve.client.request import EmbedOptions, estimated_answer_bytes, fill_inputs
from bertserve.client.results import EmbedResult, ModelInfo, split_rows
from bertserve.client.tensors import (
    ChunkAssembler,
    TensorError,
    bfloat16_to_float32,
    float32_to_bfloat16,
    numpy_to_tensor,
    tensor_to_numpy,
)
from bertserve.v1 import bertserve_pb2 as pb
from grpc_health.v1 import health_pb2

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("dtype", ["float32", "float16", "int32", "int64"])
def test_tensor_round_trip(dtype):
    array = (RNG.standard_normal((3, 5)) * 100).astype(dtype)
    tensor = numpy_to_tensor(array, dtype)
    assert list(tensor.shape) == [3, 5]
    decoded = tensor_to_numpy(tensor)
    assert decoded.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(decoded, array)


def test_tensor_bytes_are_little_endian_c_order():
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    tensor = pb.Tensor(dtype=pb.DTYPE_FLOAT32, shape=[2, 3], data=array.astype("<f4").tobytes())
    np.testing.assert_array_equal(tensor_to_numpy(tensor), array)
    big = pb.Tensor(dtype=pb.DTYPE_FLOAT32, shape=[2, 3], data=array.astype(">f4").tobytes())
    assert not np.array_equal(tensor_to_numpy(big), array)


def test_unspecified_dtype_reads_as_float32():
    data = np.array([1.5, -2.0], dtype="<f4").tobytes()
    decoded = tensor_to_numpy(pb.Tensor(shape=[2], data=data))
    assert decoded.dtype == np.float32 and decoded.tolist() == [1.5, -2.0]


def test_bfloat16_is_the_upper_half_of_float32():
    values = np.array([1.0, -2.5, 3.140625, 2**-10, 65280.0, -np.inf], dtype=np.float32)
    bits = float32_to_bfloat16(values)
    np.testing.assert_array_equal(bits, values.view(np.uint32) >> 16)  # exact in bfloat16
    tensor = pb.Tensor(dtype=pb.DTYPE_BFLOAT16, shape=[6], data=bits.astype("<u2").tobytes())
    np.testing.assert_array_equal(tensor_to_numpy(tensor), values)
    assert tensor_to_numpy(tensor, raw=True).dtype == np.uint16


def test_bfloat16_rounds_to_nearest_even_and_keeps_nan():
    # 1 + 2**-8 lies halfway between two bfloat16 values: even wins (1.0).
    halfway = np.array([1 + 2**-8, 1 + 3 * 2**-8, np.nan], dtype=np.float32)
    decoded = bfloat16_to_float32(float32_to_bfloat16(halfway))
    assert decoded[0] == 1.0 and decoded[1] == 1 + 2**-6
    assert np.isnan(decoded[2])
    values = RNG.standard_normal(1000).astype(np.float32)
    error = np.abs(bfloat16_to_float32(float32_to_bfloat16(values)) - values)
    assert np.all(error <= np.abs(values) * 2**-8)


def test_tensor_with_wrong_byte_count_is_rejected():
    tensor = pb.Tensor(dtype=pb.DTYPE_FLOAT16, shape=[2, 3], data=b"\0" * 10)
    with pytest.raises(TensorError, match="needs 12 bytes, got 10"):
        tensor_to_numpy(tensor)
    with pytest.raises(TensorError, match="unknown tensor dtype"):
        tensor_to_numpy(pb.Tensor(dtype=99, shape=[1], data=b"\0" * 4))


def _piece(name, array, offset, total):
    return pb.TensorPiece(
        name=name, row_offset=offset, total_rows=total, tensor=numpy_to_tensor(array)
    )


def test_chunks_assemble_into_whole_outputs():
    packed = RNG.standard_normal((10, 4)).astype(np.float32)
    sentence = RNG.standard_normal((2, 4)).astype(np.float32)
    chunks = [
        pb.EmbedResponse(
            id="a",
            chunk=0,
            lengths=[6, 4],
            outputs=[_piece("sentence_embedding", sentence, 0, 2), _piece("t", packed[:3], 0, 10)],
        ),
        pb.EmbedResponse(id="a", chunk=1, outputs=[_piece("t", packed[7:], 7, 10)]),
        pb.EmbedResponse(id="a", chunk=2, last=True, outputs=[_piece("t", packed[3:7], 3, 10)]),
    ]
    assembler = ChunkAssembler()
    assert [assembler.add(c) for c in chunks] == [False, False, True]
    outputs = assembler.outputs()
    np.testing.assert_array_equal(outputs["t"], packed)
    np.testing.assert_array_equal(outputs["sentence_embedding"], sentence)
    assert assembler.first is chunks[0]


def test_chunk_assembly_detects_gaps_and_disorder():
    rows = np.zeros((4, 2), dtype=np.float32)
    missing = ChunkAssembler()
    missing.add(pb.EmbedResponse(chunk=0, last=True, outputs=[_piece("t", rows[:2], 0, 4)]))
    with pytest.raises(TensorError, match="got 2 of its 4 rows"):
        missing.outputs()
    doubled = ChunkAssembler()
    doubled.add(pb.EmbedResponse(chunk=0, outputs=[_piece("t", rows[:2], 0, 4)]))
    doubled.add(pb.EmbedResponse(chunk=1, last=True, outputs=[_piece("t", rows[:2], 0, 4)]))
    with pytest.raises(TensorError, match="missing or doubled"):
        doubled.outputs()
    skipped = ChunkAssembler()
    skipped.add(pb.EmbedResponse(chunk=0))
    with pytest.raises(TensorError, match="chunk 2 arrived, expected 1"):
        skipped.add(pb.EmbedResponse(chunk=2))
    outside = ChunkAssembler()
    with pytest.raises(TensorError, match="outside its 4 rows"):
        outside.add(pb.EmbedResponse(chunk=0, outputs=[_piece("t", rows[:2], 3, 4)]))


def test_result_splits_packed_outputs_per_sequence():
    packed = np.arange(14, dtype=np.float32).reshape(7, 2)
    first = pb.EmbedResponse(model="m", variant="fp32", lengths=[5, 2], truncated=[0, 3])
    result = EmbedResult.from_outputs(
        first,
        {"token_embeddings": packed, "hidden_states.-1": packed, "hidden_states.0": packed},
        num_layers=6,
    )
    assert len(result) == 2 and result.truncated.tolist() == [0, 3]
    assert [t.shape for t in result.token_embeddings] == [(5, 2), (2, 2)]
    assert list(result.hidden_states) == [0, 6]
    np.testing.assert_array_equal(result.hidden_states[6][1], packed[5:])
    with pytest.raises(ValueError, match="lengths add up to 8"):
        split_rows(packed, np.array([4, 4]))


INFO = ModelInfo(
    name="minilm",
    architecture="BertModel",
    num_layers=6,
    hidden_size=384,
    num_heads=12,
    intermediate_size=1536,
    max_length=512,
    vocab_size=30522,
    lowercase=True,
    random_weights=False,
    source="",
    default_pooling="mean",
    default_variant="fp32",
    variants=[],
    labels=[],
    is_default=True,
)


def test_options_build_the_request():
    options = EmbedOptions.parse(pooling="cls", normalize=True, dtype="bfloat16")
    request = options.to_request(["I love Paris"])
    assert list(request.texts) == ["I love Paris"]
    assert request.pooling == pb.POOLING_CLS and request.normalize
    assert request.dtype == pb.DTYPE_BFLOAT16 and not request.token_embeddings
    # layers alone: hidden states only, negative indices made absolute
    layers = EmbedOptions.parse(layers="-1,-2,0").to_request(["x"], info=INFO)
    assert list(layers.layers) == [6, 5, 0] and layers.pooling == pb.POOLING_NONE
    # tokens and a sentence vector: the model's default pooling is named
    both = EmbedOptions.parse(output=("sentence", "tokens"), aggregate="concat-last-4")
    request = both.to_request([[101, 102]], info=INFO)
    assert request.pooling == pb.POOLING_MEAN and request.token_embeddings
    assert request.aggregate == pb.AGGREGATION_CONCAT_LAST_4
    assert list(request.sequences[0].input_ids) == [101, 102]
    assert EmbedOptions.parse(layers="all").to_request(["x"], info=INFO).all_layers


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pooling": "avg"}, "unknown pooling 'avg'; use one of: none, cls, pooler, mean, max"),
        ({"aggregate": "sum"}, "unknown aggregate"),
        ({"dtype": "int8"}, "unknown dtype 'int8'"),
        ({"output": "vectors"}, "unknown output"),
        ({"layers": "last"}, "use 'all' or comma-separated"),
        ({"pooling": "none"}, "nothing to compute"),
    ],
)
def test_bad_options_say_what_is_allowed(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EmbedOptions.parse(**kwargs)


def test_layer_out_of_range_is_rejected_before_sending():
    with pytest.raises(ValueError, match=r"layer 7 out of range: model 'minilm' has layers 0..6"):
        EmbedOptions.parse(layers=[7]).to_request(["x"], info=INFO)


def test_inputs_are_texts_or_token_sequences():
    request = pb.EmbedRequest()
    fill_inputs(request, ["a", "b"], ["c", "d"])
    assert list(request.text_pairs) == ["c", "d"]
    request = pb.EmbedRequest()
    fill_inputs(request, [{"input_ids": [101, 7, 102], "attention_mask": [1, 1, 0]}])
    assert list(request.sequences[0].attention_mask) == [1, 1, 0]
    with pytest.raises(ValueError, match="either texts or token sequences"):
        fill_inputs(pb.EmbedRequest(), [[101], "text"])
    with pytest.raises(ValueError, match="got 1 pairs for 2 texts"):
        fill_inputs(pb.EmbedRequest(), ["a", "b"], ["c"])
    with pytest.raises(ValueError, match="at least one"):
        fill_inputs(pb.EmbedRequest(), [])


def test_answer_size_estimate_grows_with_layers():
    one = EmbedOptions.parse(layers=[-1]).to_request(["word " * 100], info=INFO)
    every = EmbedOptions.parse(layers="all").to_request(["word " * 100], info=INFO)
    assert estimated_answer_bytes(every, INFO) == 7 * estimated_answer_bytes(one, INFO)
    assert estimated_answer_bytes(one, INFO) >= 102 * 384 * 4  # 100 words + [CLS] + [SEP]


def test_targets():
    assert resolve_target("127.0.0.1:50051") == "127.0.0.1:50051"
    assert resolve_target("dns:///bert.internal:50051") == "dns:///bert.internal:50051"
    assert resolve_target("127.0.0.1:1, 127.0.0.2:2") == "ipv4:127.0.0.1:1,127.0.0.2:2"
    assert resolve_target("[::1]:1,[::1]:2") == "ipv6:[::1]:1,[::1]:2"
    assert resolve_target("localhost:5,127.0.0.1:6").startswith("ipv4:127.0.0.1:5")
    with pytest.raises(ValueError, match="expected host:port"):
        resolve_target("a,b")


def test_status_codes_map_both_ways():
    assert status_code(3) is grpc.StatusCode.INVALID_ARGUMENT
    assert status_code(8) is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert status_code(1234) is grpc.StatusCode.UNKNOWN
    error = BertserveError.from_status(3, "layer 9 out of range", "req-7")
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT and error.request_id == "req-7"
    assert str(error) == "INVALID_ARGUMENT: layer 9 out of range (request 'req-7')"


def test_a_failed_call_becomes_one_exception():
    """A real call to a port nobody listens on: UNAVAILABLE, kept as the code."""
    import socket

    from bertserve.client import Client

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again when the block ends: nothing listens
    with Client(f"127.0.0.1:{port}", timeout=5) as client:
        with pytest.raises(BertserveError) as info:
            client.health()
    assert info.value.code is grpc.StatusCode.UNAVAILABLE
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize("service", ["", "bertserve.v1.BertService"])
def test_health_codec_matches_grpc_health(service):
    assert (
        health_codec.encode_request(service)
        == health_pb2.HealthCheckRequest(service=service).SerializeToString()
    )
    for status in (0, 1, 2, 3):
        data = health_pb2.HealthCheckResponse(status=status).SerializeToString()
        assert health_codec.decode_response(data) == health_codec.STATUS_NAMES[status]


def test_channel_options_round_robin_retries_and_overrides():
    import json

    from bertserve.client.channel import channel_options

    options = dict(channel_options("ipv4:127.0.0.1:1,127.0.0.1:2"))
    config = json.loads(options["grpc.service_config"])
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    (method,) = config["methodConfig"]
    assert method["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert options["grpc.enable_retries"] == 1
    assert dict(channel_options("x:1", [("grpc.enable_retries", 0)]))["grpc.enable_retries"] == 0

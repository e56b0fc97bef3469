"""Reading answers with no server: tensors, chunked answers and the documented results."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from bertserve.client.results import (
    ClassifyResult,
    EmbedResult,
    Encoding,
    ModelInfo,
    join_results,
    split_rows,
)
from bertserve.client.stream import StreamState
from bertserve.client.tensors import ChunkAssembler, TensorError, tensor_to_numpy
from bertserve.server.features import convert
from bertserve.v1 import bertserve_pb2 as pb

RNG = np.random.default_rng(0)
CODES = {
    "float32": pb.DTYPE_FLOAT32,
    "float16": pb.DTYPE_FLOAT16,
    "bfloat16": pb.DTYPE_BFLOAT16,
    "int32": pb.DTYPE_INT32,
    "int64": pb.DTYPE_INT64,
}


def tensor(array: np.ndarray, dtype: str = "float32") -> pb.Tensor:
    """``array`` as the server puts it on the wire."""
    if dtype.startswith("int"):
        data = np.ascontiguousarray(array, dtype=f"<{dtype[0]}{int(dtype[3:]) // 8}")
    else:
        data = convert(np.asarray(array, dtype=np.float32), dtype)
    return pb.Tensor(dtype=CODES[dtype], shape=list(array.shape), data=data.tobytes())


@pytest.mark.parametrize("dtype", ["float32", "float16", "int32", "int64"])
def test_tensor_decodes_to_its_dtype_and_shape(dtype):
    array = (RNG.standard_normal((3, 5)) * 100).astype(dtype)
    decoded = tensor_to_numpy(tensor(array, dtype))
    assert decoded.dtype == np.dtype(dtype) and not decoded.flags.writeable
    np.testing.assert_array_equal(decoded, array)


def test_tensor_bytes_are_little_endian_c_order():
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    little = pb.Tensor(dtype=pb.DTYPE_FLOAT32, shape=[2, 3], data=array.astype("<f4").tobytes())
    np.testing.assert_array_equal(tensor_to_numpy(little), array)
    big = pb.Tensor(dtype=pb.DTYPE_FLOAT32, shape=[2, 3], data=array.astype(">f4").tobytes())
    assert not np.array_equal(tensor_to_numpy(big), array)


def test_unspecified_dtype_reads_as_float32():
    data = np.array([1.5, -2.0], dtype="<f4").tobytes()
    decoded = tensor_to_numpy(pb.Tensor(shape=[2], data=data))
    assert decoded.dtype == np.float32 and decoded.tolist() == [1.5, -2.0]


def test_bfloat16_is_the_upper_half_of_float32():
    """What the server sends decodes exactly (its rounding: test_server_features.py)."""
    values = np.array([1.0, -2.5, 3.140625, 2**-10, 65280.0, -np.inf], dtype=np.float32)
    wire = tensor(values, "bfloat16")
    np.testing.assert_array_equal(np.frombuffer(wire.data, "<u2"), values.view(np.uint32) >> 16)
    np.testing.assert_array_equal(tensor_to_numpy(wire), values)
    assert tensor_to_numpy(wire, raw=True).dtype == np.uint16


def test_tensor_with_wrong_byte_count_is_rejected():
    broken = pb.Tensor(dtype=pb.DTYPE_FLOAT16, shape=[2, 3], data=b"\0" * 10)
    with pytest.raises(TensorError, match="needs 12 bytes, got 10"):
        tensor_to_numpy(broken)
    with pytest.raises(TensorError, match="unknown tensor dtype"):
        tensor_to_numpy(pb.Tensor(dtype=99, shape=[1], data=b"\0" * 4))


def _piece(name, array, offset, total):
    return pb.TensorPiece(name=name, row_offset=offset, total_rows=total, tensor=tensor(array))


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


def test_a_whole_embed_answer_becomes_the_documented_result():
    packed = np.arange(14, dtype=np.float32).reshape(7, 2)
    sentence = np.ones((2, 2), dtype=np.float32)
    response = pb.EmbedResponse(
        id="3",
        model="m",
        variant="fp32",
        lengths=[5, 2],
        truncated=[0, 3],
        timing=pb.Timing(total_ns=9, tokens=7, computed_tokens=10),
        outputs=[
            _piece("sentence_embedding", sentence, 0, 2),
            _piece("token_embeddings", packed, 0, 7),
            _piece("hidden_states.-1", packed, 0, 7),
            _piece("hidden_states.0", packed, 0, 7),
        ],
        last=True,
    )
    result = EmbedResult.from_pb(response, num_layers=6)
    assert (result.id, result.model, result.variant, len(result)) == ("3", "m", "fp32", 2)
    assert result.truncated.tolist() == [0, 3] and result.lengths.tolist() == [5, 2]
    assert (result.timing.total_ns, result.timing.computed_tokens) == (9, 10)
    np.testing.assert_array_equal(result.sentence_embedding, sentence)
    assert [t.shape for t in result.token_embeddings] == [(5, 2), (2, 2)]
    assert list(result.hidden_states) == [0, 6]  # -1 made absolute, sorted
    np.testing.assert_array_equal(result.hidden_states[6][1], packed[5:])
    assert set(result.outputs) == {o.name for o in response.outputs}
    # no truncated field: none dropped; no num_layers: the server's names stay
    plain = EmbedResult.from_pb(pb.EmbedResponse(lengths=[7], outputs=response.outputs[1:3]))
    assert plain.truncated.tolist() == [0] and list(plain.hidden_states) == [-1]
    with pytest.raises(ValueError, match="lengths add up to 8"):
        split_rows(packed, np.array([4, 4]))


def test_chunked_stream_answers_come_back_whole_and_in_order():
    state = StreamState(window=4, num_layers=2)
    for request_id in ("0", "1"):
        state.register(pb.EmbedRequest(id=request_id, texts=["x"]))
    rows = RNG.standard_normal((5, 2)).astype(np.float32)
    state.take_chunk(
        pb.EmbedResponse(
            id="1", chunk=0, lengths=[5], outputs=[_piece("hidden_states.-1", rows[:2], 0, 5)]
        )
    )
    assert state.pop_ready() == []
    state.take_chunk(
        pb.EmbedResponse(
            id="1", chunk=1, last=True, outputs=[_piece("hidden_states.-1", rows[2:], 2, 5)]
        )
    )
    assert state.pop_ready() == []  # "0" comes first
    error = pb.Error(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message="bad")
    state.take_chunk(pb.EmbedResponse(id="0", error=error, last=True))
    failed, result = state.pop_ready()
    assert failed.code is grpc.StatusCode.INVALID_ARGUMENT and failed.request_id == "0"
    np.testing.assert_array_equal(result.hidden_states[2][0], rows)


def test_pieces_of_one_batch_join_in_order():
    parts = [
        EmbedResult.from_pb(
            pb.EmbedResponse(
                id=f"5/{i}",
                model="m",
                lengths=[i + 1],
                timing=pb.Timing(total_ns=10),
                outputs=[_piece("sentence_embedding", np.full((1, 2), i, np.float32), 0, 1)],
            )
        )
        for i in range(3)
    ]
    joined = join_results(parts)
    assert joined.id == "5" and joined.lengths.tolist() == [1, 2, 3]
    assert joined.sentence_embedding[:, 0].tolist() == [0, 1, 2]
    assert joined.timing.total_ns == 30
    assert join_results(parts[:1]) is parts[0]


def test_classify_answer_with_logits_and_features():
    logits = np.array([[0.1, 2.0]], np.float32)
    response = pb.ClassifyResponse(
        id="4",
        model="m",
        variant="fp32",
        results=[
            pb.Classification(
                label="pos",
                labels=[
                    pb.LabelScore(label="pos", score=0.87),
                    pb.LabelScore(label="neg", score=0.13),
                ],
            )
        ],
        lengths=[3],
        outputs=[
            _piece("logits", logits, 0, 1),
            _piece("hidden_states.-1", np.ones((3, 2), np.float32), 0, 3),
        ],
    )
    result = ClassifyResult.from_pb(response, num_layers=6)
    assert result.labels == ["pos"] and len(result) == 1
    assert list(result[0].scores) == ["pos", "neg"]
    np.testing.assert_array_equal(result.logits, logits)
    assert list(result.features.hidden_states) == [6]
    assert result.features.lengths.tolist() == [3]
    bare = ClassifyResult.from_pb(pb.ClassifyResponse(results=response.results))
    assert bare.logits is None and bare.features is None


def test_encodings_and_model_info():
    encoding = pb.Encoding(
        tokens=["[CLS]", "hi", "[SEP]"],
        input_ids=[101, 7632, 102],
        attention_mask=[1, 1, 1],
        token_type_ids=[0, 0, 0],
        offsets=[pb.Offset(), pb.Offset(start=0, end=2), pb.Offset()],
        special_tokens_mask=[True, False, True],
        truncated=4,
    )
    decoded = Encoding.from_pb(encoding)
    assert decoded.offsets == [(0, 0), (0, 2), (0, 0)] and decoded.truncated == 4
    assert decoded.special_tokens_mask == [True, False, True]
    info = ModelInfo.from_pb(
        pb.ModelInfo(
            name="m",
            num_layers=6,
            default_pooling=pb.POOLING_MEAN,
            variants=[pb.VariantInfo(name="int8", precision="int8", loaded=True)],
        )
    )
    assert info.default_pooling == "mean" and info.variants[0].loaded

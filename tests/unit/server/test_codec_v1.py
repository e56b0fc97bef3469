"""bertserve.v1 protobuf <-> core types: no model, no server."""

from __future__ import annotations

import numpy as np
import pytest
from bertserve.server.core.request import MAX_LAYER_ENTRIES, Options, Result, Texts, Tokens
from bertserve.server.errors import InvalidArgument
from bertserve.server.v1 import codec
from bertserve.v1 import bertserve_pb2 as pb


def refused(call, *args) -> str:
    with pytest.raises(InvalidArgument) as caught:
        call(*args)
    return caught.value.render(codec.field_name)


def test_options_map_every_field():
    request = pb.EmbedRequest(
        texts=["a"],
        token_embeddings=True,
        pooling=pb.POOLING_MEAN,
        layers=[-1, 2],
        aggregate=pb.AGGREGATION_SUM_LAST_4,
        normalize=True,
        dtype=pb.DTYPE_BFLOAT16,
        truncate=True,
    )
    assert codec.options(request) == Options(
        token_embeddings=True,
        pooling="mean",
        layers=(-1, 2),
        aggregate="sum_last_4",
        normalize=True,
        dtype="bfloat16",
        truncate=True,
    )
    assert codec.options(pb.EmbedRequest()) == Options()


def test_classify_asks_for_logits_and_no_pooling_unless_told():
    assert codec.options(pb.ClassifyRequest(), classify=True) == Options(
        pooling="none", logits=True
    )
    message = refused(codec.options, pb.ClassifyRequest(normalize=True), True)
    assert message.startswith("normalize=true: needs a sentence embedding")


def test_bad_options_are_named_in_v1_words():
    assert refused(codec.options, pb.EmbedRequest(pooling=42)).startswith("pooling=42: unknown")
    assert refused(codec.options, pb.EmbedRequest(dtype=9)).startswith("dtype=9: unknown")
    assert "no output asked for" in refused(codec.options, pb.EmbedRequest(pooling=pb.POOLING_NONE))
    many = pb.EmbedRequest(layers=[0] * (MAX_LAYER_ENTRIES + 1))
    assert refused(codec.options, many) == (
        f"layers: {MAX_LAYER_ENTRIES + 1} entries; allowed at most {MAX_LAYER_ENTRIES}"
    )


def test_inputs_are_exactly_one_of_texts_or_sequences():
    texts = codec.inputs(pb.EmbedRequest(texts=["a", "b"], text_pairs=["c", "d"]))
    assert isinstance(texts, Texts) and list(texts.pairs) == ["c", "d"]
    sequence = pb.TokenSequence(input_ids=[101, 102], attention_mask=[1, 1])
    tokens = codec.inputs(pb.EmbedRequest(sequences=[sequence]))
    assert isinstance(tokens, Tokens) and list(tokens.sequences[0].input_ids) == [101, 102]
    assert "both given" in refused(codec.inputs, pb.EmbedRequest(texts=["a"], sequences=[sequence]))
    assert "empty input" in refused(codec.inputs, pb.EmbedRequest())
    assert refused(codec.inputs, pb.EmbedRequest(texts=["a"], text_pairs=["b", "c"])).startswith(
        "text_pairs: 2 given for 1 texts"
    )


def test_field_paths_read_as_v1_fields():
    assert codec.field_name(("sequences", 0, "input_ids", 3)) == "sequences[0].input_ids[3]"
    assert codec.field_name(("pairs", 2)) == "text_pairs[2]"
    assert InvalidArgument("=9: no", ("layers", 1)).render(codec.field_name) == "layers[1]=9: no"


def test_a_big_answer_is_chunked_with_the_id_in_each_chunk():
    result = Result({"token_embeddings": np.ones((1000, 384), np.float32)}, [1000], [0])
    messages = codec.embed_responses("x" * 256, "m", "fp32", result, "float32", 256 * 1024)
    assert len(messages) > 1 and messages[-1].last and not messages[0].last
    assert all(m.id == "x" * 256 and m.ByteSize() < 256 * 1024 for m in messages)
    rows = sum(piece.tensor.shape[0] for m in messages for piece in m.outputs)
    assert rows == 1000 and list(messages[0].lengths) == [1000]


def test_long_text_fields_map_to_options():
    request = pb.EmbedRequest(
        texts=["a"],
        long_text=pb.LONG_TEXT_CHUNK,
        chunk_tokens=128,
        chunk_overlap=0,
        chunk_pooling=pb.CHUNK_POOLING_MAX,
        return_chunks=True,
        spans=[pb.Span(text=0, start=0, end=1), pb.Span(text=1, start=2, end=5)],
        split=pb.SPLIT_SENTENCES,
    )
    assert codec.options(request) == Options(
        long_text="chunk",
        chunk_tokens=128,
        chunk_overlap=0,  # set to 0: not the default (unset)
        chunk_pooling="max",
        return_chunks=True,
        spans=((0, 0, 1), (1, 2, 5)),
        split="sentences",
    )
    unset = codec.options(pb.EmbedRequest(long_text=pb.LONG_TEXT_CHUNK))
    assert (unset.chunk_overlap, unset.chunk_pooling, unset.chunk_tokens) == (None, "mean", 0)
    for value, name in [
        (pb.LONG_TEXT_UNSPECIFIED, ""),
        (pb.LONG_TEXT_TRUNCATE, "truncate"),
        (pb.LONG_TEXT_ERROR, "error"),
    ]:
        assert codec.options(pb.EmbedRequest(long_text=value)).long_text == name
    for value, name in [(pb.CHUNK_POOLING_MEAN, "mean"), (pb.CHUNK_POOLING_FIRST, "first")]:
        assert codec.options(pb.EmbedRequest(chunk_pooling=value)).chunk_pooling == name


def test_spans_or_split_alone_ask_for_an_output():
    none = pb.EmbedRequest(pooling=pb.POOLING_NONE)
    none.spans.add(text=0, start=0, end=1)
    assert codec.options(none).spans == ((0, 0, 1),)
    split = pb.EmbedRequest(pooling=pb.POOLING_NONE, split=pb.SPLIT_SENTENCES)
    assert codec.options(split).split == "sentences"


def test_bad_long_text_enums_are_named_in_v1_words():
    assert refused(codec.options, pb.EmbedRequest(long_text=7)) == (
        "long_text=7: unknown or not allowed here; allowed ['LONG_TEXT_UNSPECIFIED', "
        "'LONG_TEXT_TRUNCATE', 'LONG_TEXT_ERROR', 'LONG_TEXT_CHUNK']"
    )
    assert refused(codec.options, pb.EmbedRequest(chunk_pooling=9)).startswith(
        "chunk_pooling=9: unknown or not allowed here; allowed ['CHUNK_POOLING_UNSPECIFIED'"
    )
    assert refused(codec.options, pb.EmbedRequest(split=3)) == (
        "split=3: unknown or not allowed here; allowed ['SPLIT_NONE', 'SPLIT_SENTENCES']"
    )


def test_core_errors_about_long_text_read_as_v1_fields():
    overlap = InvalidArgument("=600: allowed 0..509 (less than chunk_tokens)", ("chunk_overlap",))
    assert overlap.render(codec.field_name).startswith("chunk_overlap=600: allowed 0..509")
    span = InvalidArgument("=99: past the text's end; allowed 3..12", ("spans", 4, "end"))
    assert span.render(codec.field_name) == "spans[4].end=99: past the text's end; allowed 3..12"


def long_result(rows: int) -> Result:
    spans = np.arange(rows * 3, dtype=np.int32).reshape(rows, 3) + 2**20
    return Result(
        {
            "sentence_embedding": np.full((2, 4), 0.5, np.float32),
            "chunk_embeddings": np.ones((rows, 4), np.float32),
            "chunk_spans": spans,
            "span_embeddings": np.zeros((0, 4), np.float32),
            "span_offsets": np.zeros((0, 3), np.int32),
        },
        [900, 3],
        [0, 0],
    )


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_int32_outputs_travel_as_int32_whatever_the_dtype(dtype):
    (message,) = codec.embed_responses("id", "m", "fp32", long_result(3), dtype)
    pieces = {piece.name: piece for piece in message.outputs}
    spans = pieces["chunk_spans"].tensor
    assert spans.dtype == pb.DTYPE_INT32 and list(spans.shape) == [3, 3]
    decoded = np.frombuffer(spans.data, "<i4").reshape(3, 3)
    np.testing.assert_array_equal(decoded, long_result(3).outputs["chunk_spans"])
    assert pieces["chunk_embeddings"].tensor.dtype == codec.DTYPE_PB[dtype]
    width = 4 if dtype == "float32" else 2
    assert len(pieces["chunk_embeddings"].tensor.data) == 3 * 4 * width
    # no spans (split on a blank text): the outputs are still there, with no rows
    empty = pieces["span_offsets"]
    assert (empty.total_rows, list(empty.tensor.shape)) == (0, [0, 3])
    assert empty.tensor.dtype == pb.DTYPE_INT32


def test_a_big_long_text_answer_is_chunked_int32_rows_included():
    result = long_result(20_000)
    messages = codec.embed_responses("id", "m", "fp32", result, "float16", 64 * 1024)
    assert len(messages) > 4 and all(m.ByteSize() < 64 * 1024 for m in messages)
    rows: dict[str, list[np.ndarray]] = {}
    for message in messages:
        for piece in message.outputs:
            dtype = "<i4" if piece.tensor.dtype == pb.DTYPE_INT32 else "<u2"
            shape = list(piece.tensor.shape)
            rows.setdefault(piece.name, []).append(
                np.frombuffer(piece.tensor.data, dtype).reshape(shape)
            )
            assert piece.total_rows == result.outputs[piece.name].shape[0]
    spans = np.concatenate(rows["chunk_spans"])
    np.testing.assert_array_equal(spans, result.outputs["chunk_spans"])
    assert np.concatenate(rows["chunk_embeddings"]).shape == (20_000, 4)

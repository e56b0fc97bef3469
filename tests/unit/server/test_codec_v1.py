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

"""Building requests with no server: each option becomes the exact message fields it should."""

from __future__ import annotations

import pytest
from bertserve.client.request import (
    EmbedOptions,
    classify_features,
    classify_request,
    embed_request,
    fill_inputs,
    tokenize_request,
)
from bertserve.client.split import estimated_answer_bytes, needs_stream, split_request
from bertserve.v1 import bertserve_pb2 as pb
from minilm_info import MINILM_INFO

INFO = MINILM_INFO


def embed(words: dict, inputs=("x",), info=None) -> pb.EmbedRequest:
    return embed_request(list(inputs), None, EmbedOptions.parse(**words), info=info)


@pytest.mark.parametrize(
    ("words", "fields"),
    [
        ({}, {}),
        ({"pooling": "cls"}, {"pooling": pb.POOLING_CLS}),
        ({"pooling": "Mean"}, {"pooling": pb.POOLING_MEAN}),
        ({"pooling": "none", "output": "tokens"}, {"pooling": pb.POOLING_NONE}),
        ({"normalize": True}, {"normalize": True}),
        ({"dtype": "float16"}, {"dtype": pb.DTYPE_FLOAT16}),
        ({"dtype": "bfloat16"}, {"dtype": pb.DTYPE_BFLOAT16}),
        ({"truncate": True}, {"truncate": True}),
        ({"aggregate": "concat-last-4"}, {"aggregate": pb.AGGREGATION_CONCAT_LAST_4}),
        ({"aggregate": "mean_all"}, {"aggregate": pb.AGGREGATION_MEAN_ALL}),
    ],
)
def test_each_sentence_option_sets_its_field(words, fields):
    expected = pb.EmbedRequest(texts=["x"], **{"dtype": pb.DTYPE_FLOAT32, **fields})
    if words.get("output") == "tokens":
        expected.token_embeddings = True
        assert embed(words, info=INFO) == expected
        return
    assert embed(words) == expected


@pytest.mark.parametrize(
    ("words", "fields"),
    [
        # layers alone: hidden states only, negative indices made absolute, duplicates once
        ({"layers": "-1,-2,0,6"}, {"layers": [6, 5, 0], "pooling": pb.POOLING_NONE}),
        ({"layers": -1}, {"layers": [6], "pooling": pb.POOLING_NONE}),
        ({"layers": [1, -7]}, {"layers": [1, 0], "pooling": pb.POOLING_NONE}),
        ({"layers": "all"}, {"all_layers": True, "pooling": pb.POOLING_NONE}),
        # tokens beside a sentence vector: the model's default pooling is named
        (
            {"output": ("sentence", "tokens")},
            {"token_embeddings": True, "pooling": pb.POOLING_MEAN},
        ),
        ({"output": "tokens"}, {"token_embeddings": True, "pooling": pb.POOLING_NONE}),
        # pooling asked with layers: a sentence vector too
        ({"layers": [-1], "pooling": "max"}, {"layers": [6], "pooling": pb.POOLING_MAX}),
    ],
)
def test_token_level_options_use_the_models_info(words, fields):
    expected = pb.EmbedRequest(texts=["x"], dtype=pb.DTYPE_FLOAT32, **fields)
    assert EmbedOptions.parse(**words).needs_info
    assert embed(words, info=INFO) == expected


def test_call_fields_and_inputs():
    options = EmbedOptions.parse()
    request = embed_request(
        [{"input_ids": [101, 7, 102], "attention_mask": [1, 1, 0]}, [101, 102]],
        None,
        options,
        model="minilm",
        variant="int8",
        request_id="7",
    )
    assert request == pb.EmbedRequest(
        id="7",
        model="minilm",
        variant="int8",
        dtype=pb.DTYPE_FLOAT32,
        sequences=[
            pb.TokenSequence(input_ids=[101, 7, 102], attention_mask=[1, 1, 0]),
            pb.TokenSequence(input_ids=[101, 102]),
        ],
    )
    pairs = embed_request("a", "b", options)
    assert list(pairs.texts) == ["a"] and list(pairs.text_pairs) == ["b"]


def test_options_travel_as_one_value():
    options = EmbedOptions.parse(pooling="cls", layers=[-1], dtype="float16")
    assert options == EmbedOptions(
        sentence=True, pooling=pb.POOLING_CLS, layers=(-1,), dtype=pb.DTYPE_FLOAT16
    )
    assert EmbedOptions.of(options, {}) is options
    assert EmbedOptions.of(None, {"pooling": "cls"}) == EmbedOptions(pooling=pb.POOLING_CLS)
    with pytest.raises(TypeError, match=r"give options= or the keywords \['pooling'\]"):
        EmbedOptions.of(options, {"pooling": "cls"})
    with pytest.raises(TypeError, match="unexpected keyword argument 'pool'"):
        EmbedOptions.of(None, {"pool": "cls"})
    with pytest.raises(AttributeError):
        options.pooling = pb.POOLING_MAX  # frozen


@pytest.mark.parametrize(
    ("words", "message"),
    [
        ({"pooling": "avg"}, "unknown pooling 'avg'; use one of: none, cls, pooler, mean, max"),
        ({"aggregate": "sum"}, "unknown aggregate 'sum'; use one of: last, concat_last_4"),
        ({"dtype": "int8"}, "unknown dtype 'int8'; use one of: float32, float16, bfloat16"),
        ({"output": "vectors"}, r"unknown output \['vectors'\]"),
        ({"layers": "last"}, "use 'all' or comma-separated"),
        ({"pooling": "none"}, "nothing to compute"),
    ],
)
def test_bad_options_say_what_is_allowed(words, message):
    with pytest.raises(ValueError, match=message):
        EmbedOptions.parse(**words)


def test_layer_out_of_range_is_rejected_before_sending():
    with pytest.raises(ValueError, match=r"layer 7 out of range: model 'minilm' has layers 0..6"):
        embed({"layers": [7]}, info=INFO)
    with pytest.raises(ValueError, match="default pooling is needed"):
        embed({"output": ("sentence", "tokens")})  # token outputs need the model's info


def test_inputs_are_texts_or_token_sequences():
    with pytest.raises(ValueError, match="either texts or token sequences"):
        fill_inputs(pb.EmbedRequest(), [[101], "text"])
    with pytest.raises(ValueError, match="got 1 pairs for 2 texts"):
        fill_inputs(pb.EmbedRequest(), ["a", "b"], ["c"])
    with pytest.raises(ValueError, match="pairs go with texts"):
        fill_inputs(pb.EmbedRequest(), [[101]], ["c"])
    with pytest.raises(ValueError, match="at least one"):
        fill_inputs(pb.EmbedRequest(), [])
    with pytest.raises(ValueError, match="needs 'input_ids'"):
        fill_inputs(pb.EmbedRequest(), [{"attention_mask": [1]}])
    with pytest.raises(ValueError, match="cannot read float as a token sequence"):
        fill_inputs(pb.EmbedRequest(), [1.5])


def test_classify_asks_for_labels_only_unless_features_are_named():
    assert classify_features(None, {}) == (None, False)
    assert classify_features(None, {"truncate": True, "dtype": "float16"}) == (None, True)
    with pytest.raises(ValueError, match="normalize=True needs a sentence vector"):
        classify_features(None, {"normalize": True})
    features, truncate = classify_features(None, {"pooling": "cls", "truncate": True})
    assert features == EmbedOptions(pooling=pb.POOLING_CLS, truncate=True) and truncate
    given = EmbedOptions(tokens=True, sentence=False)
    assert classify_features(given, {}) == (given, False)


def test_classify_request_fields():
    request = classify_request(["a", "b"], ["c", "d"], top_k=2, logits=True, truncate=True)
    assert request == pb.ClassifyRequest(
        texts=["a", "b"], text_pairs=["c", "d"], top_k=2, logits=True, truncate=True
    )
    # a sentence vector on Classify: the default pooling must be named (UNSPECIFIED is none)
    features = EmbedOptions.parse(output="sentence", layers=[-1])
    assert features.pools_by_default
    request = classify_request(["a"], None, features=features, info=INFO, model="m")
    assert request == pb.ClassifyRequest(
        texts=["a"], model="m", pooling=pb.POOLING_MEAN, layers=[6], dtype=pb.DTYPE_FLOAT32
    )
    with pytest.raises(ValueError, match="top_k=-1: use 0"):
        classify_request(["a"], None, top_k=-1)


def test_tokenize_request_fields():
    assert tokenize_request("a", "b", model="m", pad_to=16, truncate=True) == pb.TokenizeRequest(
        model="m", texts=["a"], text_pairs=["b"], pad_to=16, truncate=True
    )
    assert tokenize_request(["a", "b"]) == pb.TokenizeRequest(texts=["a", "b"])


def test_answer_size_estimate_grows_with_layers():
    one = embed({"layers": [-1]}, ["word " * 100], INFO)
    every = embed({"layers": "all"}, ["word " * 100], INFO)
    assert estimated_answer_bytes(every, INFO) == 7 * estimated_answer_bytes(one, INFO)
    assert estimated_answer_bytes(one, INFO) >= 102 * 384 * 4  # 100 words + [CLS] + [SEP]
    half = embed({"layers": [-1], "dtype": "float16"}, ["word " * 100], INFO)
    assert estimated_answer_bytes(half, INFO) * 2 == estimated_answer_bytes(one, INFO)


def test_big_calls_are_split_for_embed_stream():
    sentences = embed({}, [f"t{i}" for i in range(600)])
    sentences.id = "9"
    assert needs_stream(sentences, None)  # over 256 inputs
    pieces = split_request(sentences, None)
    assert [p.id for p in pieces] == ["9/0", "9/1", "9/2"]
    assert [len(p.texts) for p in pieces] == [256, 256, 88]
    assert [t for p in pieces for t in p.texts] == list(sentences.texts)
    small = embed({}, ["a", "b"])
    assert not needs_stream(small, None) and len(split_request(small, None)) == 1
    # token-level answers over ~3 MB go over EmbedStream, in pieces of about 8 MiB
    long = embed({"layers": "all"}, ["word " * 170] * 64, INFO)
    assert needs_stream(long, INFO)
    pieces = split_request(long, INFO)
    assert len(pieces) > 1
    assert all(estimated_answer_bytes(p, INFO) <= 8 * 2**20 for p in pieces)

"""Long documents in the client with no server: each long-text option becomes its exact
message fields, bad values are refused before sending, and answers split over EmbedStream
come back with their text indices whole."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from bertserve.client.request import EmbedOptions, classify_features, embed_request
from bertserve.client.results import EmbedResult, ModelInfo, join_results
from bertserve.client.split import estimated_answer_bytes, split_request
from bertserve.v1 import bertserve_pb2 as pb
from minilm_info import MINILM_INFO

INFO = MINILM_INFO


def embed(words: dict, inputs=("x",), info=None) -> pb.EmbedRequest:
    return embed_request(list(inputs), None, EmbedOptions.parse(**words), info=info)


def expected(**fields) -> pb.EmbedRequest:
    return pb.EmbedRequest(texts=["x"], dtype=pb.DTYPE_FLOAT32, **fields)


@pytest.mark.parametrize(
    ("words", "fields"),
    [
        ({"long_text": "truncate"}, {"long_text": pb.LONG_TEXT_TRUNCATE}),
        ({"long_text": "error"}, {"long_text": pb.LONG_TEXT_ERROR}),
        ({"long_text": "Chunk"}, {"long_text": pb.LONG_TEXT_CHUNK}),
        (
            {"long_text": "chunk", "chunk_tokens": 128},
            {"long_text": pb.LONG_TEXT_CHUNK, "chunk_tokens": 128},
        ),
        (
            {"long_text": "chunk", "chunk_pooling": "max"},
            {"long_text": pb.LONG_TEXT_CHUNK, "chunk_pooling": pb.CHUNK_POOLING_MAX},
        ),
        (
            {"long_text": "chunk", "chunk_pooling": "first"},
            {"long_text": pb.LONG_TEXT_CHUNK, "chunk_pooling": pb.CHUNK_POOLING_FIRST},
        ),
        (
            {"long_text": "chunk", "chunk_pooling": "mean"},
            {"long_text": pb.LONG_TEXT_CHUNK, "chunk_pooling": pb.CHUNK_POOLING_MEAN},
        ),
        (
            {"long_text": "chunk", "return_chunks": True},
            {"long_text": pb.LONG_TEXT_CHUNK, "return_chunks": True},
        ),
        ({"split": "sentences"}, {"split": pb.SPLIT_SENTENCES}),
        ({"spans": [(0, 1)]}, {"spans": [pb.Span(text=0, start=0, end=1)]}),
    ],
)
def test_each_long_text_option_sets_its_field(words, fields):
    assert embed(words) == expected(**fields)


def test_chunk_overlap_is_sent_when_set_even_to_zero():
    unset = embed({"long_text": "chunk", "chunk_tokens": 64})
    assert not unset.HasField("chunk_overlap")  # the server's default: chunk_tokens / 8
    zero = embed({"long_text": "chunk", "chunk_tokens": 64, "chunk_overlap": 0})
    assert zero.HasField("chunk_overlap") and zero.chunk_overlap == 0
    some = embed({"long_text": "chunk", "chunk_overlap": 16})  # window: the model's largest
    assert some.HasField("chunk_overlap") and some.chunk_overlap == 16 and some.chunk_tokens == 0


def test_spans_are_pairs_of_text_0_triples_mappings_or_messages():
    request = embed(
        {
            "spans": [
                (0, 3),
                (1, 0, 2),
                {"text": 1, "start": 2, "end": 4},
                {"start": 5, "end": 6},
                pb.Span(text=1, start=7, end=9),
            ]
        },
        ["abcdefg", "hijklmnop"],
    )
    assert [(s.text, s.start, s.end) for s in request.spans] == [
        (0, 0, 3),
        (1, 0, 2),
        (1, 2, 4),
        (0, 5, 6),
        (1, 7, 9),
    ]
    # spans alone are an output: no sentence vector is needed beside them
    only = embed({"pooling": "none", "spans": [(0, 1)]})
    assert only.pooling == pb.POOLING_NONE and len(only.spans) == 1


def test_the_options_travel_as_one_value():
    options = EmbedOptions.parse(
        long_text="chunk",
        chunk_tokens=128,
        chunk_overlap=16,
        chunk_pooling="max",
        return_chunks=True,
        split="sentences",
    )
    assert options == EmbedOptions(
        long_text=pb.LONG_TEXT_CHUNK,
        chunk_tokens=128,
        chunk_overlap=16,
        chunk_pooling=pb.CHUNK_POOLING_MAX,
        return_chunks=True,
        split=pb.SPLIT_SENTENCES,
    )
    assert options.asks_long_text and not EmbedOptions().asks_long_text
    assert EmbedOptions.of(options, {}) is options
    request = embed_request(["a"], None, options)
    assert request == pb.EmbedRequest(
        texts=["a"],
        dtype=pb.DTYPE_FLOAT32,
        long_text=pb.LONG_TEXT_CHUNK,
        chunk_tokens=128,
        chunk_overlap=16,
        chunk_pooling=pb.CHUNK_POOLING_MAX,
        return_chunks=True,
        split=pb.SPLIT_SENTENCES,
    )


@pytest.mark.parametrize(
    ("words", "message"),
    [
        ({"long_text": "split"}, "unknown long_text 'split'; use one of: truncate, error, chunk"),
        (
            {"long_text": "chunk", "chunk_pooling": "sum"},
            "unknown chunk_pooling 'sum'; use one of: mean, max, first",
        ),
        ({"split": "words"}, "unknown split 'words'; use one of: sentences"),
        (
            {"long_text": "chunk", "chunk_tokens": 64, "chunk_overlap": 64},
            r"chunk_overlap=64 with chunk_tokens=64: use 0..63",
        ),
        ({"long_text": "chunk", "chunk_tokens": -1}, "chunk_tokens=-1: use a whole number"),
        ({"long_text": "chunk", "chunk_overlap": 1.5}, "chunk_overlap=1.5: use a whole number"),
        ({"chunk_tokens": 64}, "chunk_tokens shape the windows of long_text='chunk': set it"),
        ({"long_text": "truncate", "return_chunks": True}, "return_chunks shape the windows"),
        ({"spans": [(3, 3)]}, r"span \(3, 3\): start must be before end"),
        ({"spans": [(0, -1, 2)]}, "character offsets >= 0"),
        ({"spans": [(1, 2, 3, 4)]}, r"use \(start, end\) or \(text, start, end\)"),
        ({"spans": "0:5"}, "spans: a list of"),
        ({"spans": [(0, 1)], "split": "sentences"}, "give spans or split, not both"),
    ],
)
def test_bad_long_text_options_say_what_is_allowed(words, message):
    with pytest.raises(ValueError, match=message):
        EmbedOptions.parse(**words)


def test_a_span_must_name_a_text_of_the_call():
    with pytest.raises(ValueError, match=r"span \(2, 0, 1\) names text 2 of a call with 2 texts"):
        embed({"spans": [(2, 0, 1)]}, ["a", "b"])
    with pytest.raises(ValueError, match="spans go with texts, not token sequences"):
        embed_request([[101, 102]], None, EmbedOptions.parse(spans=[(0, 1)]))


def test_classify_refuses_long_text_options():
    with pytest.raises(ValueError, match="long_text, chunk_tokens: options of embed"):
        classify_features(None, {"long_text": "chunk", "chunk_tokens": 8})
    from bertserve.client.request import classify_request

    features = EmbedOptions.parse(long_text="chunk")
    with pytest.raises(ValueError, match="options of embed, not classify"):
        classify_request(["a"], None, features=features)


def test_a_chunked_text_is_estimated_past_the_window():
    text = "word " * 3000  # ~15,000 characters: far past 512 tokens
    cut = embed({"output": "tokens"}, [text], INFO)
    chunked = embed({"output": "tokens", "long_text": "chunk"}, [text], INFO)
    assert estimated_answer_bytes(cut, INFO) == 512 * 384 * 4
    assert estimated_answer_bytes(chunked, INFO) >= 5000 * 384 * 4
    with_chunks = embed({"output": "tokens", "long_text": "chunk", "return_chunks": True}, [text])
    assert estimated_answer_bytes(with_chunks, INFO) > estimated_answer_bytes(chunked, INFO)


def test_spans_go_with_their_texts_when_a_call_is_split():
    texts = [f"text number {i}" for i in range(600)]
    spans = [(0, 0, 4), (255, 1, 3), (256, 0, 4), (599, 5, 11), (599, 12, 15)]
    request = embed({"spans": spans}, texts)
    request.id = "3"
    pieces = split_request(request, None)
    assert [len(p.texts) for p in pieces] == [256, 256, 88]
    assert [[(s.text, s.start, s.end) for s in p.spans] for p in pieces] == [
        [(0, 0, 4), (255, 1, 3)],
        [(0, 0, 4)],
        [(87, 5, 11), (87, 12, 15)],
    ]


def _tensor(array: np.ndarray) -> pb.Tensor:
    dtype = pb.DTYPE_INT32 if array.dtype == np.int32 else pb.DTYPE_FLOAT32
    return pb.Tensor(
        dtype=dtype, shape=array.shape, data=array.astype(array.dtype.newbyteorder("<")).tobytes()
    )


def _answer(texts: int, spans: list[tuple[int, int, int]], chunks: int) -> EmbedResult:
    """An answer of ``texts`` texts with one window each but ``chunks`` in the first."""
    rng = np.random.default_rng(texts)
    outputs = {
        "sentence_embedding": rng.random((texts, 4), dtype=np.float32),
        "chunk_embeddings": rng.random((chunks + texts - 1, 4), dtype=np.float32),
        "chunk_spans": np.array(
            [(0, i * 10, i * 10 + 12) for i in range(chunks)]
            + [(t, 0, 5) for t in range(1, texts)],
            dtype=np.int32,
        ).reshape(-1, 3),
    }
    if spans:
        outputs["span_embeddings"] = rng.random((len(spans), 4), dtype=np.float32)
        outputs["span_offsets"] = np.array(spans, dtype=np.int32)
    response = pb.EmbedResponse(id="5/0", model="m", variant="v", lengths=[7] * texts)
    for name, array in outputs.items():
        response.outputs.add(name=name, tensor=_tensor(array))
    return EmbedResult.from_pb(response)


def test_an_answer_exposes_chunks_and_spans():
    result = _answer(2, [(1, 0, 3)], 3)
    assert result.chunk_embeddings.shape == (4, 4) and result.chunk_embeddings.dtype == np.float32
    assert result.chunk_spans.dtype == np.int32
    assert result.chunk_spans.tolist() == [[0, 0, 12], [0, 10, 22], [0, 20, 32], [1, 0, 5]]
    assert result.span_offsets.tolist() == [[1, 0, 3]]
    assert result.span_embeddings.shape == (1, 4)
    plain = _answer(1, [], 1)
    assert plain.span_embeddings is None and plain.span_offsets is None


def test_joined_pieces_count_texts_from_the_whole_call():
    parts = [_answer(2, [(1, 0, 3)], 2), _answer(3, [], 1), _answer(2, [(0, 1, 2), (1, 0, 4)], 1)]
    joined = join_results(parts)
    assert len(joined) == 7
    assert joined.chunk_spans[:, 0].tolist() == [0, 0, 1, 2, 3, 4, 5, 6]
    assert joined.span_offsets.tolist() == [[1, 0, 3], [5, 1, 2], [6, 0, 4]]
    np.testing.assert_array_equal(
        joined.span_embeddings,
        np.concatenate([parts[0].span_embeddings, parts[2].span_embeddings]),
    )
    assert parts[2].span_offsets.tolist() == [[0, 1, 2], [1, 0, 4]]  # the pieces are untouched


def test_model_info_states_the_chunk_window():
    info = ModelInfo.from_pb(
        pb.ModelInfo(name="m", max_length=512, chunk_tokens=510, chunk_overlap=63)
    )
    assert (info.chunk_tokens, info.chunk_overlap) == (510, 63)
    assert dataclasses.replace(INFO, chunk_tokens=0).chunk_overlap == 63

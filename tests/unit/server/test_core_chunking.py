"""Long documents in the core without a model: window plans, the stitching choice, pooling
across windows, spans and their checks, sentences, offsets of real tokenizations."""

from __future__ import annotations

import numpy as np
import pytest
from bertserve.server.core.chunking import (
    check_covered,
    check_spans,
    chunk_defaults,
    plan_windows,
    pool_windows,
    sentence_spans,
    span_means,
    span_tokens,
    stitch_choice,
    stitch_rows,
    window_ids,
    window_spans,
)
from bertserve.server.core.request import Options
from bertserve.server.core.validate import ModelFacts, answer_bytes, feature_spec, long_text
from bertserve.server.errors import InvalidArgument

FACTS = ModelFacts(num_layers=6, hidden_size=8, max_length=34, vocab_size=100)


def refused(call, *args, **kwargs) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        call(*args, **kwargs)
    return caught.value


@pytest.mark.parametrize(
    ("tokens", "window", "overlap", "expected"),
    [
        (0, 4, 1, [(0, 0)]),
        (4, 4, 1, [(0, 4)]),
        (5, 4, 1, [(0, 4), (3, 5)]),
        (10, 4, 1, [(0, 4), (3, 7), (6, 10)]),
        (11, 4, 1, [(0, 4), (3, 7), (6, 10), (9, 11)]),
        (10, 4, 0, [(0, 4), (4, 8), (8, 10)]),
        (9, 3, 2, [(0, 3), (1, 4), (2, 5), (3, 6), (4, 7), (5, 8), (6, 9)]),
    ],
)
def test_windows_start_every_stride_until_one_reaches_the_end(tokens, window, overlap, expected):
    windows = plan_windows(tokens, window, overlap)
    assert [tuple(w) for w in windows.tolist()] == expected


def test_every_window_plan_covers_each_token_and_ends_once():
    for tokens in range(0, 60):
        for window in range(1, 12):
            for overlap in range(window):
                windows = plan_windows(tokens, window, overlap)
                assert windows[0, 0] == 0 and windows[-1, 1] == tokens
                assert np.all(windows[:, 1] - windows[:, 0] <= window)
                # consecutive windows share exactly `overlap` tokens, the last only reaches
                assert np.all(windows[1:, 0] == windows[:-1, 0] + window - overlap)
                assert np.all(windows[:-1, 1] < tokens)


def test_each_window_gets_its_own_cls_and_sep():
    content = np.arange(10, 20)
    ids = window_ids(content, plan_windows(10, 4, 1), cls=101, sep=102)
    assert [i.tolist() for i in ids] == [
        [101, 10, 11, 12, 13, 102],
        [101, 13, 14, 15, 16, 102],
        [101, 16, 17, 18, 19, 102],
    ]


def test_a_token_takes_the_window_where_its_context_on_both_sides_is_largest():
    windows = plan_windows(10, 4, 2)  # (0,4) (2,6) (4,8) (6,10)
    choice = stitch_choice(windows, 10)
    # token 2: min(2,1)=1 in window 0, min(0,3)=0 in window 1 -> window 0;
    # token 3: min(3,0)=0 in w0, min(1,2)=1 in w1 -> w1; token 4: w1 min(2,1)=1, w2 min(0,3)=0
    assert choice.tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 3, 3]
    # brute force over many plans: the chosen window maximizes the context, earliest on ties
    for tokens in (7, 20, 33):
        for window in (3, 4, 8):
            for overlap in range(window):
                windows = plan_windows(tokens, window, overlap)
                choice = stitch_choice(windows, tokens)
                for token in range(tokens):
                    scores = [
                        min(token - s, e - 1 - token) if s <= token < e else -1
                        for s, e in windows.tolist()
                    ]
                    assert choice[token] == scores.index(max(scores))


def test_ties_go_to_the_earlier_window():
    windows = np.array([[0, 4], [1, 5]])  # token 2: min(2,1)=1 in w0 and min(1,2)=1 in w1
    assert stitch_choice(windows, 5).tolist() == [0, 0, 0, 1, 1]


def test_stitched_rows_take_cls_from_the_first_window_and_sep_from_the_last():
    windows = plan_windows(10, 4, 2)
    rows = stitch_rows(windows, 10, first_row=100)
    # windows laid out from row 100, 6 rows each: [CLS] t t t t [SEP]
    assert rows[0] == 100 and rows[-1] == 100 + 4 * 6 - 1 and len(rows) == 12
    laid = [(w, t) for w, (s, e) in enumerate(windows.tolist()) for t in ["C", *range(s, e), "S"]]
    for token, row in enumerate(rows[1:-1]):
        window, what = laid[row - 100]
        assert what == token and window == stitch_choice(windows, 10)[token]
    # one window: the rows in order, as the window computed them
    assert stitch_rows(plan_windows(3, 4, 1), 3, 7).tolist() == [7, 8, 9, 10, 11]


def test_pooling_across_windows():
    vectors = np.array([[1.0, 8.0], [3.0, 2.0], [5.0, 5.0]], dtype=np.float32)
    windows = np.array([[0, 4], [3, 7], [6, 8]])  # 4, 4 and 2 content tokens
    mean = pool_windows(vectors, windows, "mean")
    assert mean.dtype == np.float32
    np.testing.assert_allclose(mean, (4 * vectors[0] + 4 * vectors[1] + 2 * vectors[2]) / 10)
    assert pool_windows(vectors, windows, "max").tolist() == [5.0, 8.0]
    assert pool_windows(vectors, windows, "first").tolist() == [1.0, 8.0]
    one = np.array([[0.1, 0.7]], dtype=np.float32)
    assert pool_windows(one, np.array([[0, 3]]), "mean").tobytes() == one[0].tobytes()


def test_window_spans_run_from_the_first_tokens_start_to_the_last_ones_end():
    offsets = np.array([[0, 3], [4, 6], [6, 9], [10, 12], [13, 20]])
    spans = window_spans(offsets, np.array([[0, 2], [1, 4], [3, 5]]))
    assert spans.tolist() == [[0, 6], [4, 12], [10, 20]]
    assert window_spans(offsets[:0], np.array([[0, 0]])).tolist() == [[0, 0]]


def test_a_span_covers_the_tokens_it_overlaps():
    # "hello world, again": hello [0,5) world [6,11) , [11,12) again [13,18)
    offsets = np.array([[0, 5], [6, 11], [11, 12], [13, 18]])
    spans = np.array([[0, 5], [5, 6], [2, 8], [11, 13], [12, 13], [3, 4], [0, 18]])
    ranges = span_tokens(offsets, spans)
    assert ranges.tolist() == [[0, 1], [1, 1], [0, 2], [2, 3], [3, 3], [0, 1], [0, 4]]
    # the same as the rule token.start < end and token.end > start, token by token
    for (start, end), (first, stop) in zip(spans.tolist(), ranges.tolist(), strict=True):
        hit = [i for i, (s, e) in enumerate(offsets.tolist()) if s < end and e > start]
        assert list(range(first, stop)) == hit


def test_span_means_are_the_means_of_their_rows():
    rows = np.arange(24, dtype=np.float32).reshape(6, 4)
    means = span_means(rows, np.array([[0, 2], [2, 3], [1, 6]]))
    np.testing.assert_allclose(means, [rows[0:2].mean(0), rows[2], rows[1:6].mean(0)])


def test_spans_are_checked_against_the_texts():
    lengths = [10, 5]
    assert check_spans([(0, 0, 3), (1, 0, 5), (0, 3, 10)], lengths).tolist() == [
        [0, 0, 3],
        [1, 0, 5],
        [0, 3, 10],
    ]
    error = refused(check_spans, [(0, 0, 3), (2, 0, 1)], lengths)
    assert error.field == ("spans", 1, "text") and "allowed 0..1" in error.detail
    error = refused(check_spans, [(1, 2, 6)], lengths)
    assert error.field == ("spans", 0, "end")
    assert "allowed 0 <= start < end <= 5, in Unicode code points" in error.detail
    error = refused(check_spans, [(0, 4, 4)], lengths)  # empty
    assert error.field == ("spans", 0, "end") and "[4, 4)" in error.detail
    error = refused(check_spans, [(0, 10, 11)], lengths)
    assert error.field == ("spans", 0, "start")
    error = refused(check_spans, [(0, -1, 2)], lengths)
    assert error.field == ("spans", 0, "start")
    # overlapping, or out of order, on one text; other texts' spans in between do not matter
    error = refused(check_spans, [(0, 0, 4), (1, 0, 2), (0, 3, 6)], lengths)
    assert error.field == ("spans", 2, "start")
    assert "before the end (4) of spans[0]" in error.detail and "at least 4" in error.detail
    refused(check_spans, [(0, 5, 6), (0, 1, 2)], lengths)
    check_spans([(0, 0, 4), (0, 4, 6)], lengths)  # touching is fine


def test_a_span_that_covers_no_token_is_refused():
    spans = np.array([[0, 0, 3], [0, 3, 4]])
    check_covered(spans[:1], np.array([[0, 1]]), np.array([0]))
    error = refused(check_covered, spans, np.array([[0, 1], [1, 1]]), np.array([0, 1]))
    assert error.field == ("spans", 1) and "covers no token" in error.detail


def test_sentences_end_after_terminators_followed_by_whitespace_or_at_line_breaks():
    text = (
        "  First one. Second?  Third!Still third\u3002 e.g.x and 3.5 stay.\nLine two\n\n "
        "\u2028end\uff0e\u5168\u89d2\uff01 ok"
    )
    pieces = [text[s:e] for s, e in sentence_spans(text)]
    assert pieces == [
        "First one.",
        "Second?",
        "Third!Still third\u3002 e.g.x and 3.5 stay.",
        "Line two",
        "end\uff0e\u5168\u89d2\uff01",  # full-width stops end one only before whitespace
        "ok",
    ]
    assert sentence_spans(" \n\t ") == []
    assert sentence_spans("one") == [(0, 3)]


def test_offsets_of_the_real_tokenizer_are_code_points(model_tokenizer):
    text = "Héllo 😀 world, 안녕하세요 세계! 𝔘nicode café. Ünïcödé"
    encoding = model_tokenizer.encode_whole([text])[0]
    offsets = np.asarray(encoding.offsets)[1:-1]
    pieces = [text[s:e] for s, e in offsets.tolist()]
    assert pieces[:3] == ["Héllo", "😀", "world"]
    assert "안" in pieces and "café" in pieces and "Ünïcödé" in pieces
    # a span over the emoji and one over 안녕 find their tokens by code points
    emoji = text.index("😀")
    korean = text.index("안녕")
    ranges = span_tokens(offsets, np.array([[emoji, emoji + 1], [korean, korean + 2]]))
    assert [pieces[i] for i in range(*ranges[0])] == ["😀"]
    assert set(pieces[ranges[1, 0] : ranges[1, 1]]) == {"안", "녕"}
    # offsets never run backwards: span lookups can bisect
    assert np.all(np.diff(offsets[:, 0]) >= 0) and np.all(np.diff(offsets[:, 1]) >= 0)


@pytest.fixture(scope="module")
def model_tokenizer():
    """The bundled MiniLM's tokenizer.json (shipped in the package, no export needed)."""
    from bertserve.export.sources import minilm_path
    from bertserve.server.tokenize import TextTokenizer

    return TextTokenizer(minilm_path() / "tokenizer.json", 512)


def test_long_text_options_are_checked_with_the_allowed_range():
    def check(texts=True, pairs=False, **options):
        return long_text(Options(**options), FACTS, texts, pairs)

    assert chunk_defaults(34) == (32, 4)
    settings = check(long_text="chunk")
    assert (settings.chunk, settings.window, settings.overlap) == (True, 32, 4)
    assert check(long_text="chunk", chunk_tokens=10).overlap == 1
    assert check(long_text="chunk", chunk_tokens=10, chunk_overlap=0).overlap == 0
    assert not check().expands and check(long_text="chunk").expands
    assert check(truncate=True).truncate and not check(long_text="error", truncate=True).truncate
    assert check(long_text="truncate").truncate
    assert check(spans=((0, 0, 1),)).expands and check(split="sentences").split
    error = refused(check, long_text="chunk", chunk_tokens=33)
    assert error.field == ("chunk_tokens",) and "allowed 1..32 (0: 32" in error.detail
    error = refused(check, long_text="chunk", chunk_tokens=8, chunk_overlap=8)
    assert error.field == ("chunk_overlap",) and "allowed 0..7" in error.detail
    error = refused(check, texts=False, long_text="chunk")
    assert "allowed: texts only" in error.detail
    error = refused(check, texts=False, spans=((0, 0, 1),))
    assert error.field == ("spans",) and "allowed: texts only" in error.detail
    error = refused(check, pairs=True, long_text="chunk")
    assert error.field == ("pairs",) and "without pairs" in error.detail
    error = refused(check, long_text="chunk", logits=True)
    assert error.field == ("logits",)
    error = refused(check, return_chunks=True)
    assert error.field == ("return_chunks",) and "only with long_text=chunk" in error.detail
    refused(check, chunk_overlap=3)
    refused(check, long_text="sometimes")
    refused(check, long_text="chunk", chunk_pooling="median")
    error = refused(check, split="sentences", spans=((0, 0, 1),))
    assert error.field == ("split",)


def test_return_chunks_needs_a_sentence_vector_and_spans_allow_normalize():
    error = refused(
        feature_spec, Options(long_text="chunk", return_chunks=True, pooling="none"), FACTS
    )
    assert error.field == ("return_chunks",)
    spec = feature_spec(
        Options(pooling="none", token_embeddings=True, normalize=True, split="sentences"), FACTS
    )
    assert spec.normalize and spec.pooling is None


def test_the_answer_size_counts_chunk_and_span_rows():
    spec = feature_spec(Options(pooling="mean"), FACTS)
    plain = answer_bytes(spec, [100, 3], 8, False)
    assert plain == 2 * 8 * 4
    assert answer_bytes(spec, [100, 3], 8, False, chunks=5, spans=7) == plain + (5 + 7) * (
        8 * 4 + 3 * 4
    )

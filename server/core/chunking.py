"""Long documents: windows over a text's tokens, stitching and pooling across them, character
spans and sentences. Plain numpy, no model (see bertserve.v1's LongText for the behaviour).

Token indices here are of a text's content tokens (its [CLS] and [SEP] not counted); a
window ``[start, end)`` of them is computed as [CLS] + content[start:end] + [SEP].
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from bertserve.server.errors import InvalidArgument

# [CLS] and [SEP]: what each window adds around its content tokens.
SPECIAL_TOKENS = 2
# A sentence ends after . ! ? or their full-width forms followed by whitespace, or at a line
# break (the line breaks str.splitlines knows).
SENTENCE_BREAK = re.compile(r"(?<=[.!?\uff0e\uff01\uff1f])\s+|[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]")


def chunk_defaults(max_length: int) -> tuple[int, int]:
    """The largest (and default) CHUNK window in content tokens for a model of ``max_length``
    positions, and the default overlap for it (chunk_tokens // 8)."""
    tokens = max(1, max_length - SPECIAL_TOKENS)
    return tokens, default_overlap(tokens)


def default_overlap(chunk_tokens: int) -> int:
    """Tokens consecutive windows share when the request does not say: an eighth."""
    return chunk_tokens // 8


def plan_windows(tokens: int, window: int, overlap: int) -> np.ndarray:
    """Windows ``(k, 2)`` [start, end) over ``tokens`` content tokens: starting at 0, then
    every ``window - overlap`` tokens, until one reaches the end (the last may be shorter).
    A text that fits is one window, however short (even of no token)."""
    if not 0 <= overlap < window:
        raise ValueError(f"overlap {overlap} outside 0..{window - 1}")
    if tokens <= window:
        return np.array([[0, tokens]], dtype=np.int64)
    stride = window - overlap
    count = -(-(tokens - window) // stride) + 1  # the first k with k * stride + window >= tokens
    starts = np.arange(count, dtype=np.int64) * stride
    return np.stack([starts, np.minimum(starts + window, tokens)], axis=1)


def window_ids(content: np.ndarray, windows: np.ndarray, cls: int, sep: int) -> list[np.ndarray]:
    """Each window's input ids: [CLS] + its content tokens + [SEP] (int64)."""
    return [
        np.concatenate(([cls], content[start:end], [sep])).astype(np.int64)
        for start, end in windows.tolist()
    ]


def stitch_choice(windows: np.ndarray, tokens: int) -> np.ndarray:
    """For each content token, the window it takes its rows from: the one where the fewer of
    its neighbours before and after it in the window is largest; ties go to the earlier."""
    best = np.full(tokens, -1, dtype=np.int64)
    choice = np.zeros(tokens, dtype=np.int64)
    for index, (start, end) in enumerate(windows.tolist()):
        where = np.arange(start, end)
        context = np.minimum(where - start, end - 1 - where)
        better = context > best[start:end]  # strictly: an equal later window loses
        best[start:end][better] = context[better]
        choice[start:end][better] = index
    return choice


def stitch_rows(windows: np.ndarray, tokens: int, first_row: int = 0) -> np.ndarray:
    """Row indices, into the windows' rows laid one window after another from ``first_row``
    (each window: [CLS], its tokens, [SEP]), of the whole text's tokens+2 rows: [CLS] from the
    first window, each content token from its chosen window, [SEP] from the last window."""
    sizes = windows[:, 1] - windows[:, 0] + SPECIAL_TOKENS
    bases = first_row + np.concatenate(([0], np.cumsum(sizes)[:-1]))
    choice = stitch_choice(windows, tokens)
    content = bases[choice] + 1 + np.arange(tokens) - windows[choice, 0]
    return np.concatenate(([bases[0]], content, [bases[-1] + sizes[-1] - 1])).astype(np.int64)


def pool_windows(vectors: np.ndarray, windows: np.ndarray, how: str) -> np.ndarray:
    """The text's vector from its windows' ``(k, width)`` vectors: "mean" weighted by each
    window's content tokens, element-wise "max", or the "first" window's. One window: its
    vector, unchanged."""
    if len(vectors) == 1 or how == "first":
        return vectors[0]
    if how == "max":
        return vectors.max(axis=0)
    if how != "mean":
        raise ValueError(f"unknown chunk pooling {how!r}")
    weights = (windows[:, 1] - windows[:, 0]).astype(np.float64)
    if not weights.sum():
        return vectors[0]
    mean = (vectors.astype(np.float64) * weights[:, None]).sum(axis=0) / weights.sum()
    return mean.astype(np.float32)


def window_spans(offsets: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """Characters ``(k, 2)`` [start, end) each window covers: its first content token's start
    to its last one's end ((0, 0) for a window of no token). ``offsets``: (tokens, 2)."""
    spans = np.zeros((len(windows), 2), dtype=np.int64)
    full = windows[:, 1] > windows[:, 0]
    spans[full, 0] = offsets[windows[full, 0], 0]
    spans[full, 1] = offsets[windows[full, 1] - 1, 1]
    return spans


def span_tokens(offsets: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """Content tokens ``(m, 2)`` [first, end) each character span [start, end) overlaps (a
    token overlaps when token.start < end and token.end > start); first >= end: none."""
    spans = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    starts, ends = offsets[:, 0], offsets[:, 1]
    if np.all(np.diff(starts) >= 0) and np.all(np.diff(ends) >= 0):
        first = np.searchsorted(ends, spans[:, 0], side="right")
        end = np.searchsorted(starts, spans[:, 1], side="left")
        return np.stack([first, end], axis=1).astype(np.int64)
    # offsets out of order (no BERT tokenizer we know): the same rule, token by token
    result = np.zeros((len(spans), 2), dtype=np.int64)
    for index, (start, end) in enumerate(spans.tolist()):
        hit = np.flatnonzero((starts < end) & (ends > start))
        if hit.size:  # the rows taken are first..last: the tokens it overlaps and any between
            result[index] = hit[0], hit[-1] + 1
    return result


def span_means(rows: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """The mean ``(m, width)`` float32 of ``rows[first:end]`` for each range."""
    result = np.empty((len(ranges), rows.shape[1]), dtype=np.float32)
    for index, (first, end) in enumerate(ranges.tolist()):
        result[index] = rows[first:end].mean(axis=0)
    return result


def check_spans(spans: Sequence[Sequence[int]], lengths: Sequence[int]) -> np.ndarray:
    """The spans ``(m, 3)`` [text, start, end) as int64, checked against the texts'
    ``lengths`` in code points: a text that exists, 0 <= start < end <= its length, and the
    spans of one text in order and not overlapping. (That each covers a token is checked once
    tokenized, by :func:`check_covered`.)"""
    array = np.asarray(spans, dtype=np.int64).reshape(-1, 3)
    text, start, end = array[:, 0], array[:, 1], array[:, 2]
    bad = np.flatnonzero((text < 0) | (text >= len(lengths)))
    if bad.size:
        i = int(bad[0])
        raise InvalidArgument(
            f"={int(text[i])}: no such text; allowed 0..{len(lengths) - 1}", ("spans", i, "text")
        )
    size = np.asarray(lengths, dtype=np.int64)[text]
    for i in np.flatnonzero((start < 0) | (start >= end) | (end > size)).tolist()[:1]:
        which = "end" if start[i] >= 0 and start[i] < size[i] else "start"
        raise InvalidArgument(
            f"[{int(start[i])}, {int(end[i])}) of texts[{int(text[i])}] ({int(size[i])} "
            f"characters): allowed 0 <= start < end <= {int(size[i])}, in Unicode code points",
            ("spans", i, which),
        )
    order = np.argsort(text, kind="stable")
    same = text[order][1:] == text[order][:-1]
    bad = np.flatnonzero(same & (start[order][1:] < end[order][:-1]))
    if bad.size:
        i, before = int(order[bad[0] + 1]), int(order[bad[0]])
        raise InvalidArgument(
            f"={int(start[i])}: before the end ({int(end[before])}) of spans[{before}] on the "
            f"same text; allowed: the spans of one text in order and not overlapping, so at "
            f"least {int(end[before])}",
            ("spans", i, "start"),
        )
    return array


def check_covered(spans: np.ndarray, ranges: np.ndarray, indices: np.ndarray) -> None:
    """INVALID_ARGUMENT for the first span (request index ``indices``) that covers no token."""
    bad = np.flatnonzero(ranges[:, 1] <= ranges[:, 0])
    if bad.size:
        at = int(bad[0])
        text, start, end = (int(v) for v in spans[at])
        raise InvalidArgument(
            f"[{start}, {end}) of texts[{text}] covers no token (only whitespace, characters "
            "the tokenizer drops, or text past the kept tokens); allowed: spans that cover at "
            "least one token",
            ("spans", int(indices[at])),
        )


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """One [start, end) per sentence, in code points: a sentence ends after . ! ? (or their
    full-width forms) followed by whitespace, or at a line break; whitespace trimmed, empty
    ones left out."""
    spans = []
    position = 0
    for found in [*SENTENCE_BREAK.finditer(text), None]:
        end = found.start() if found else len(text)
        piece = text[position:end]
        stripped = piece.strip()
        if stripped:
            start = position + len(piece) - len(piece.lstrip())
            spans.append((start, start + len(stripped)))
        if found:
            position = found.end()
    return spans

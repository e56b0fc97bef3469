"""Long documents in requests: the ``long_text`` options (chunking, late-chunking spans) in
the wire's terms, checked before anything is sent (the server checks them against the text
and the model; see bertserve.v1's LongText)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from bertserve.v1 import bertserve_pb2 as pb

LONG_TEXTS = {
    "truncate": pb.LONG_TEXT_TRUNCATE,
    "error": pb.LONG_TEXT_ERROR,
    "chunk": pb.LONG_TEXT_CHUNK,
}
CHUNK_POOLINGS = {
    "mean": pb.CHUNK_POOLING_MEAN,
    "max": pb.CHUNK_POOLING_MAX,
    "first": pb.CHUNK_POOLING_FIRST,
}
SPLITS = {"sentences": pb.SPLIT_SENTENCES}

# The EmbedOptions fields of long documents and their defaults (nothing asked).
DEFAULTS: dict[str, Any] = {
    "long_text": pb.LONG_TEXT_UNSPECIFIED,
    "chunk_tokens": 0,
    "chunk_overlap": None,
    "chunk_pooling": pb.CHUNK_POOLING_UNSPECIFIED,
    "return_chunks": False,
    "spans": (),
    "split": pb.SPLIT_NONE,
}

Span = tuple[int, int, int]
SpanLike = tuple[int, int] | tuple[int, int, int] | Mapping[str, int] | pb.Span


def _choice(kind: str, value: str, table: Mapping[str, int]) -> int:
    key = value.lower().replace("-", "_")
    if key not in table:
        raise ValueError(f"unknown {kind} {value!r}; use one of: {', '.join(table)}")
    return table[key]


def parse(
    *,
    long_text: str | None = None,
    chunk_tokens: int | None = None,
    chunk_overlap: int | None = None,
    chunk_pooling: str | None = None,
    return_chunks: bool = False,
    spans: Iterable[SpanLike] | None = None,
    split: str | None = None,
) -> dict[str, Any]:
    """The EmbedOptions fields of the long-text keywords (their meaning: ``Client.embed``)."""
    mode = (
        pb.LONG_TEXT_UNSPECIFIED
        if long_text is None
        else _choice("long_text", long_text, LONG_TEXTS)
    )
    tokens = _count("chunk_tokens", chunk_tokens, 0)  # 0: the largest window
    overlap = None if chunk_overlap is None else _count("chunk_overlap", chunk_overlap, 0)
    if tokens and overlap is not None and overlap >= tokens:
        raise ValueError(
            f"chunk_overlap={overlap} with chunk_tokens={tokens}: use 0..{tokens - 1} "
            "(windows must move forward)"
        )
    chunking = {
        "chunk_tokens": chunk_tokens,
        "chunk_overlap": chunk_overlap,
        "chunk_pooling": chunk_pooling,
        "return_chunks": return_chunks or None,
    }
    asked = [name for name, value in chunking.items() if value is not None]
    if asked and mode != pb.LONG_TEXT_CHUNK:
        raise ValueError(f"{', '.join(asked)} shape the windows of long_text='chunk': set it too")
    span_rows = _spans(spans)
    if span_rows and split is not None:
        raise ValueError("give spans or split, not both (split makes the spans)")
    return {
        "long_text": mode,
        "chunk_tokens": tokens,
        "chunk_overlap": overlap,
        "chunk_pooling": pb.CHUNK_POOLING_UNSPECIFIED
        if chunk_pooling is None
        else _choice("chunk_pooling", chunk_pooling, CHUNK_POOLINGS),
        "return_chunks": bool(return_chunks),
        "spans": span_rows,
        "split": pb.SPLIT_NONE if split is None else _choice("split", split, SPLITS),
    }


def _count(name: str, value: int | None, least: int) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name}={value!r}: use a whole number of tokens, {least} or more")
    return value


def _spans(spans: Iterable[SpanLike] | None) -> tuple[Span, ...]:
    """Spans as (text, start, end): triples, (start, end) pairs of text 0, {"text", "start",
    "end"} mappings or Span messages."""
    if spans is None:
        return ()
    if isinstance(spans, (str, bytes)):
        raise ValueError("spans: a list of (start, end) or (text, start, end) character offsets")
    rows = []
    for span in spans:
        if isinstance(span, pb.Span):
            row: tuple[Any, ...] = (span.text, span.start, span.end)
        elif isinstance(span, Mapping):
            row = (span.get("text", 0), span.get("start"), span.get("end"))
        else:
            row = tuple(span)
            row = (0, *row) if len(row) == 2 else row
        if len(row) != 3 or not all(isinstance(x, int) and x >= 0 for x in row):
            raise ValueError(
                f"span {span!r}: use (start, end) or (text, start, end), character offsets >= 0"
            )
        if row[1] >= row[2]:
            raise ValueError(f"span {span!r}: start must be before end (spans are not empty)")
        rows.append((int(row[0]), int(row[1]), int(row[2])))
    return tuple(rows)


def fill(request: pb.EmbedRequest, fields: Mapping[str, Any]) -> None:
    """Set the long-text fields of an EmbedRequest from EmbedOptions' values."""
    request.long_text = fields["long_text"]
    request.chunk_tokens = fields["chunk_tokens"]
    if fields["chunk_overlap"] is not None:
        request.chunk_overlap = fields["chunk_overlap"]  # set, even to 0: not the default
    request.chunk_pooling = fields["chunk_pooling"]
    request.return_chunks = fields["return_chunks"]
    for text, start, end in fields["spans"]:
        request.spans.add(text=text, start=start, end=end)
    request.split = fields["split"]


def rebase_spans(request: pb.EmbedRequest, piece: pb.EmbedRequest, first: int, count: int) -> None:
    """Keep in ``piece`` (texts ``first..first+count-1`` of ``request``) the spans of its own
    texts, renumbered from 0."""
    del piece.spans[:]
    for span in request.spans:
        if first <= span.text < first + count:
            piece.spans.add(text=span.text - first, start=span.start, end=span.end)

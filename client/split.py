"""When one unary Embed cannot carry a call: the answer-size estimate, and the pieces the
call is split into over EmbedStream."""

from __future__ import annotations

import math

from bertserve.v1 import bertserve_pb2 as pb

from .long_text import rebase_spans
from .results import ModelInfo

# An Embed answer must fit in 4 MB; above this estimate the client asks over EmbedStream.
UNARY_LIMIT_BYTES = 3 * 1024 * 1024


def estimated_answer_bytes(request: pb.EmbedRequest, info: ModelInfo) -> int:
    """A generous estimate of the answer's size, to pick Embed or EmbedStream."""
    if request.sequences:
        tokens = sum(len(s.input_ids) for s in request.sequences)
    else:
        pairs = list(request.text_pairs) or [""] * len(request.texts)
        # A WordPiece token covers about 3 characters or more of English text;
        # an answer that still exceeds 4 MB falls back to EmbedStream. A chunked text keeps
        # every token (stitched from its windows).
        limit = math.inf if request.long_text == pb.LONG_TEXT_CHUNK else info.max_length
        tokens = sum(
            min(limit, math.ceil((len(t) + len(p)) / 3) + 3)
            for t, p in zip(request.texts, pairs, strict=True)
        )
    width = info.hidden_size * (4 if request.aggregate == pb.AGGREGATION_CONCAT_LAST_4 else 1)
    rows_per_token = (width if request.token_embeddings else 0) + info.hidden_size * (
        (info.num_layers + 1) if request.all_layers else len(request.layers)
    )
    itemsize = 4 if request.dtype in (pb.DTYPE_FLOAT32, pb.DTYPE_UNSPECIFIED) else 2
    # a window's vector per max_length tokens (at most), a span's per span given
    rows = (tokens // max(1, info.max_length // 2) + 1) if request.return_chunks else 0
    rows += len(request.spans)
    return int(tokens * rows_per_token * itemsize + rows * (width * itemsize + 12))


# More inputs than this in one embed call go over EmbedStream as several requests, so no
# single request or answer nears a message or queue limit.
SPLIT_SEQUENCES = 256
# A streamed piece's answer stays around this size (the server's default cap is 16 MiB).
PIECE_ANSWER_BYTES = 8 * 1024 * 1024


def split_request(request: pb.EmbedRequest, info: ModelInfo | None) -> list[pb.EmbedRequest]:
    """``request`` as one or more requests, each of at most SPLIT_SEQUENCES inputs and an
    estimated answer near PIECE_ANSWER_BYTES (ids ``<id>/0``, ``<id>/1``, ...)."""
    count = len(request.texts) or len(request.sequences)
    size = SPLIT_SEQUENCES
    if info is not None:
        estimate = estimated_answer_bytes(request, info)
        size = min(size, max(1, count * PIECE_ANSWER_BYTES // max(estimate, 1)))
    pieces = []
    for index, start in enumerate(range(0, count, size)):
        piece = pb.EmbedRequest()
        piece.CopyFrom(request)
        piece.id = f"{request.id}/{index}"
        for name in ("texts", "text_pairs", "sequences"):
            values = list(getattr(request, name))
            field = getattr(piece, name)
            del field[:]
            field.extend(values[start : start + size])
        rebase_spans(request, piece, start, size)
        pieces.append(piece)
    return pieces


def needs_stream(request: pb.EmbedRequest, info: ModelInfo | None) -> bool:
    """Whether one unary Embed could not carry this call (too many inputs or too big an
    answer for one 4 MB message)."""
    count = len(request.texts) or len(request.sequences)
    if count > SPLIT_SEQUENCES:
        return True
    return info is not None and estimated_answer_bytes(request, info) > UNARY_LIMIT_BYTES

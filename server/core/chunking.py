"""Long documents: windows over a text's tokens, stitching and pooling across them. Plain
numpy, no model (see bertserve.v1's LongText for the behaviour)."""

from __future__ import annotations

# [CLS] and [SEP]: what each window adds around its content tokens.
SPECIAL_TOKENS = 2


def chunk_defaults(max_length: int) -> tuple[int, int]:
    """The largest (and default) CHUNK window in content tokens for a model of ``max_length``
    positions, and the default overlap for it (chunk_tokens // 8)."""
    tokens = max(1, max_length - SPECIAL_TOKENS)
    return tokens, default_overlap(tokens)


def default_overlap(chunk_tokens: int) -> int:
    """Tokens consecutive windows share when the request does not say: an eighth."""
    return chunk_tokens // 8

"""The inputs of a request: texts (with optional pairs) or token sequences."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bertserve.v1 import bertserve_pb2 as pb

# A batch: texts, or token sequences (lists of ids, {"input_ids": ...} mappings or TokenSequence).
Inputs = str | Sequence[str] | Sequence[Sequence[int]] | Sequence[Mapping[str, Any]]


def fill_inputs(
    request: pb.EmbedRequest | pb.ClassifyRequest,
    inputs: Inputs,
    pairs: str | Sequence[str] | None = None,
) -> None:
    """Put texts (with optional pairs) or token sequences into ``request``."""
    if isinstance(inputs, str):
        inputs = [inputs]
    if isinstance(pairs, str):
        pairs = [pairs]
    items = list(inputs)
    if not items:
        raise ValueError("give at least one text or token sequence")
    if all(isinstance(item, str) for item in items):
        request.texts.extend(items)
        if pairs is not None:
            pairs = list(pairs)
            if len(pairs) != len(items):
                raise ValueError(f"got {len(pairs)} pairs for {len(items)} texts: one per text")
            request.text_pairs.extend(pairs)
        return
    if pairs is not None:
        raise ValueError("pairs go with texts; token sequences carry token_type_ids instead")
    for item in items:
        request.sequences.append(token_sequence(item))


def token_sequence(item: Any) -> pb.TokenSequence:
    """One TokenSequence from a list of ids, a mapping with input_ids (and masks) or a message."""
    if isinstance(item, pb.TokenSequence):
        return item
    if isinstance(item, str):
        raise ValueError("a batch holds either texts or token sequences, not both")
    if isinstance(item, Mapping) or hasattr(item, "input_ids"):
        get = item.get if isinstance(item, Mapping) else lambda k: getattr(item, k, None)
        ids = get("input_ids")
        if ids is None:
            raise ValueError("a token sequence mapping needs 'input_ids'")
        mask, types = get("attention_mask"), get("token_type_ids")
        return pb.TokenSequence(
            input_ids=[int(i) for i in ids],
            attention_mask=[int(m) for m in mask] if mask is not None else [],
            token_type_ids=[int(t) for t in types] if types is not None else [],
        )
    try:
        return pb.TokenSequence(input_ids=[int(i) for i in item])
    except (TypeError, ValueError):
        raise ValueError(
            f"cannot read {type(item).__name__} as a token sequence: use a list of ids "
            "or a mapping with input_ids"
        ) from None

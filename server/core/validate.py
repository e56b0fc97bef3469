"""Validation once, against plain model facts (testable without a model): options -> the
features to compute, identifiers, token sequences, and the cost of an answer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from bertserve.server.core.request import (
    AGGREGATIONS,
    DTYPES,
    MAX_ID_BYTES,
    MAX_LAYER_ENTRIES,
    MAX_NAME_BYTES,
    POOLINGS,
    Options,
    Tokens,
)
from bertserve.server.errors import FailedPrecondition, InvalidArgument
from bertserve.server.features import FeatureSpec
from bertserve.server.tokenize import Sequence


@dataclass(frozen=True)
class ModelFacts:
    """What validation needs to know of a loaded variant."""

    model: str = "m"
    variant: str = "fp32"
    num_layers: int = 6
    hidden_size: int = 384
    max_length: int = 512
    vocab_size: int = 30522
    type_vocab_size: int = 2
    default_pooling: str = "cls"
    has_logits: bool = False


def check_identifier(value: str, field: str, limit: int) -> None:
    """INVALID_ARGUMENT when an id or name is over ``limit`` UTF-8 bytes (cheap: a str is at
    most 4 bytes a character, so most need no encoding)."""
    if len(value) * 4 > limit and len(value.encode()) > limit:
        raise InvalidArgument(
            f"{len(value.encode())} bytes, longer than allowed; at most {limit} bytes", (field,)
        )


def check_identifiers(request_id: str, model: str, variant: str) -> None:
    check_identifier(request_id, "id", MAX_ID_BYTES)
    check_identifier(model, "model", MAX_NAME_BYTES)
    check_identifier(variant, "variant", MAX_NAME_BYTES)


def feature_spec(options: Options, facts: ModelFacts) -> FeatureSpec:
    """The outputs ``options`` ask of a model with ``facts``, checked; layers made absolute."""
    top = facts.num_layers
    if len(options.layers) > MAX_LAYER_ENTRIES:
        raise InvalidArgument(
            f"{len(options.layers)} entries; allowed at most {MAX_LAYER_ENTRIES}", ("layers",)
        )
    layers: dict[int, None] = {}
    for index, layer in enumerate(options.layers):
        if not -(top + 1) <= layer <= top:
            raise InvalidArgument(
                f"={layer}: no such layer; allowed {-(top + 1)}..{top} (0 is the embedding "
                f"output, {top} or -1 the last layer)",
                ("layers", index),
            )
        layers[layer % (top + 1)] = None
    if options.all_layers:
        layers = dict.fromkeys(range(top + 1))
    if options.aggregate not in AGGREGATIONS:
        raise InvalidArgument(f"={options.aggregate!r}: allowed {AGGREGATIONS}", ("aggregate",))
    if options.aggregate in ("concat_last_4", "sum_last_4") and top < 4:
        raise InvalidArgument(
            f"={options.aggregate}: the model has only {top} layers; needs 4", ("aggregate",)
        )
    if options.dtype not in DTYPES:
        raise InvalidArgument(f"={options.dtype!r}: allowed {DTYPES}", ("dtype",))
    if options.pooling not in POOLINGS:
        raise InvalidArgument(f"={options.pooling!r}: allowed {POOLINGS}", ("pooling",))
    pooling: str | None = options.pooling
    if pooling == "default":
        others = options.token_embeddings or layers or options.logits
        pooling = None if others else facts.default_pooling
    elif pooling == "model":
        pooling = facts.default_pooling
    elif pooling == "none":
        pooling = None
    if options.normalize and pooling is None:
        raise InvalidArgument("=true: needs a sentence embedding; set pooling", ("normalize",))
    if options.logits and not facts.has_logits:
        raise FailedPrecondition(
            f"variant {facts.variant!r} of model {facts.model!r} lists labels but its "
            "model.onnx has no logits output; export the fine-tuned checkpoint again"
        )
    spec = FeatureSpec(
        num_layers=top,
        token_embeddings=options.token_embeddings,
        pooling=pooling,
        layers=tuple(layers),
        aggregate=options.aggregate,
        normalize=options.normalize,
        dtype=options.dtype,
        logits=options.logits,
    )
    if not (spec.token_embeddings or spec.pooling or spec.layers or spec.logits):
        raise InvalidArgument("none asked for: ask for at least one output", ("outputs",))
    return spec


def answer_bytes(spec: FeatureSpec, lengths: list[int], hidden: int, padded: bool) -> int:
    """Bytes of the tensors an answer will carry, from the sequences' lengths alone.
    ``padded``: token-level outputs are sent padded to the longest sequence (v2)."""
    sequences = len(lengths)
    tokens = sequences * max(lengths, default=0) if padded else sum(lengths)
    width = hidden * 4 if spec.aggregate == "concat_last_4" else hidden
    values = tokens * len(spec.layers) * hidden
    if spec.token_embeddings:
        values += tokens * width
    if spec.pooling:
        values += sequences * (hidden if spec.pooling == "pooler" else width)
    return values * (4 if spec.dtype == "float32" else 2)


def _int64(values: object, keep: int) -> np.ndarray:
    if isinstance(values, np.ndarray):
        return values[:keep].astype(np.int64, copy=False)
    return np.asarray(values[:keep], dtype=np.int64)  # type: ignore[index]


def check_range(values: np.ndarray, top: int, field: tuple, what: str = "") -> None:
    bad = np.flatnonzero((values < 0) | (values > top))
    if bad.size:
        where = int(bad[0])
        raise InvalidArgument(f"={int(values[where])}: {what}allowed 0..{top}", (*field, where))


def token_sequences(tokens: Tokens, facts: ModelFacts, truncate: bool) -> list[Sequence]:
    """Pre-tokenized sequences checked (lengths first, from the lengths alone; then ranges on
    what is kept) and cut to the model's limit when ``truncate``."""
    limit = facts.max_length
    result = []
    for index, sequence in enumerate(tokens.sequences):
        where = ("sequences", index)
        count = len(sequence.input_ids)
        if not count:
            raise InvalidArgument(f"empty; allowed: 1 to {limit} token ids", (*where, "input_ids"))
        for name in ("attention_mask", "token_type_ids"):
            values = getattr(sequence, name)
            if values is not None and len(values) and len(values) != count:
                raise InvalidArgument(
                    f"{len(values)} values for {count} input_ids; allowed: none (the default) "
                    "or one per input id",
                    (*where, name),
                )
        if count > limit and not truncate:
            raise InvalidArgument(
                f"{count} tokens, longer than the model's limit of {limit}; shorten it or set "
                "truncate=true",
                (*where, "input_ids"),
            )
        keep = min(count, limit)
        ids = _int64(sequence.input_ids, keep)
        check_range(ids, facts.vocab_size - 1, (*where, "input_ids"), "outside the vocabulary; ")
        mask = sequence.attention_mask
        mask = _int64(mask, keep) if mask is not None and len(mask) else np.ones_like(ids)
        check_range(mask, 1, (*where, "attention_mask"))
        if not mask.any():
            raise InvalidArgument(
                "all 0, no token to compute; allowed 1 for the real tokens, 0 for padding "
                "after them",
                (*where, "attention_mask"),
            )
        types = sequence.token_type_ids
        types = _int64(types, keep) if types is not None and len(types) else np.zeros_like(ids)
        check_range(types, facts.type_vocab_size - 1, (*where, "token_type_ids"))
        result.append(Sequence(ids, mask, types, truncated=count - keep))
    return result

"""Validation once, against plain model facts (testable without a model): options -> the
features to compute, identifiers, token sequences, and the cost of an answer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from bertserve.server.core.chunking import SPECIAL_TOKENS, chunk_defaults, default_overlap
from bertserve.server.core.request import (
    AGGREGATIONS,
    CHUNK_POOLINGS,
    DTYPES,
    LONG_TEXTS,
    MAX_ID_BYTES,
    MAX_LAYER_ENTRIES,
    MAX_NAME_BYTES,
    POOLINGS,
    SPLITS,
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
    if options.normalize and pooling is None and not (options.spans or options.split):
        raise InvalidArgument(
            "=true: needs a sentence embedding or spans; set pooling", ("normalize",)
        )
    if options.return_chunks and pooling is None:
        raise InvalidArgument(
            "=true: needs a sentence embedding per chunk; set pooling", ("return_chunks",)
        )
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
    late = bool(options.spans or options.split)  # span vectors are an output too
    if not (spec.token_embeddings or spec.pooling or spec.layers or spec.logits or late):
        raise InvalidArgument("none asked for: ask for at least one output", ("outputs",))
    return spec


def answer_bytes(
    spec: FeatureSpec,
    lengths: list[int],
    hidden: int,
    padded: bool,
    chunks: int = 0,
    spans: int = 0,
) -> int:
    """Bytes of the tensors an answer will carry, from the sequences' lengths alone.
    ``padded``: token-level outputs are sent padded to the longest sequence (v2). ``chunks``
    and ``spans``: rows of "chunk_embeddings" and "span_embeddings", each with its int32
    [text, start, end] row."""
    sequences = len(lengths)
    tokens = sequences * max(lengths, default=0) if padded else sum(lengths)
    width = hidden * 4 if spec.aggregate == "concat_last_4" else hidden
    values = tokens * len(spec.layers) * hidden
    if spec.token_embeddings:
        values += tokens * width
    if spec.pooling:
        values += (sequences + chunks) * (hidden if spec.pooling == "pooler" else width)
    values += spans * width
    return values * (4 if spec.dtype == "float32" else 2) + (chunks + spans) * 3 * 4


@dataclass(frozen=True)
class LongText:
    """How a request treats long texts, checked: ``chunk`` (windows of ``window`` content
    tokens overlapping by ``overlap``, pooled by ``pooling``) or else ``truncate``; late
    chunking by ``spans`` or ``split``."""

    chunk: bool = False
    truncate: bool = False
    window: int = 0
    overlap: int = 0
    pooling: str = "mean"
    return_chunks: bool = False
    spans: tuple[tuple[int, int, int], ...] = ()
    split: bool = False

    @property
    def expands(self) -> bool:
        """Whether the request leaves the plain path (windows, stitching or spans)."""
        return self.chunk or bool(self.spans) or self.split


def truncates(options: Options) -> bool:
    """Whether a text over the model's window is cut (else refused), when not chunked."""
    return options.long_text == "truncate" or (options.long_text == "" and options.truncate)


def long_text(options: Options, facts: ModelFacts, texts: bool, pairs: bool) -> LongText:
    """The long-text options checked against the model and the inputs (``texts``: texts, not
    pre-tokenized sequences; ``pairs``: with a second segment)."""
    mode = options.long_text
    if mode not in LONG_TEXTS:
        raise InvalidArgument(f"={mode!r}: allowed {LONG_TEXTS[1:]}", ("long_text",))
    if options.chunk_pooling not in CHUNK_POOLINGS:
        raise InvalidArgument(
            f"={options.chunk_pooling!r}: allowed {CHUNK_POOLINGS}", ("chunk_pooling",)
        )
    if options.split not in SPLITS:
        raise InvalidArgument(f"={options.split!r}: allowed {SPLITS[1:]}", ("split",))
    late = bool(options.spans) or bool(options.split)
    if options.spans and options.split:
        raise InvalidArgument(
            f"={options.split} with {len(options.spans)} spans; allowed one of them", ("split",)
        )
    chunk = mode == "chunk"
    if (chunk or late) and not texts:
        what = "long_text=chunk" if chunk else ("spans" if options.spans else "split")
        raise InvalidArgument(
            f"{what} with pre-tokenized sequences; allowed: texts only (character offsets and "
            "windows need the text)",
            ("long_text" if chunk else "spans" if options.spans else "split",),
        )
    if (chunk or late) and pairs:
        what = "long_text=chunk" if chunk else ("spans" if options.spans else "split")
        raise InvalidArgument(
            f"{what} with text pairs; allowed: single texts, without pairs",
            ("pairs",),
        )
    if chunk and options.logits:
        raise InvalidArgument(
            "with long_text=chunk: logits are per sequence and not pooled across windows; "
            "allowed long_text truncate or error",
            ("logits",),
        )
    largest, _ = chunk_defaults(facts.max_length)
    if not chunk:
        for name, given in (
            ("chunk_tokens", options.chunk_tokens != 0),
            ("chunk_overlap", options.chunk_overlap is not None),
            ("chunk_pooling", options.chunk_pooling != "mean"),
            ("return_chunks", options.return_chunks),
        ):
            if given:
                raise InvalidArgument(
                    f"={getattr(options, name)} without long_text=chunk; allowed only with "
                    "long_text=chunk",
                    (name,),
                )
        return LongText(truncate=truncates(options), spans=options.spans, split=bool(options.split))
    window = options.chunk_tokens or largest
    if not 0 < window <= largest:
        raise InvalidArgument(
            f"={window}: allowed 1..{largest} (0: {largest}, the model's {facts.max_length} "
            f"positions less its {SPECIAL_TOKENS} special tokens)",
            ("chunk_tokens",),
        )
    overlap = default_overlap(window) if options.chunk_overlap is None else options.chunk_overlap
    if not 0 <= overlap < window:
        raise InvalidArgument(
            f"={overlap}: allowed 0..{window - 1} (less than chunk_tokens={window})",
            ("chunk_overlap",),
        )
    return LongText(
        chunk=True,
        window=window,
        overlap=overlap,
        pooling=options.chunk_pooling,
        return_chunks=options.return_chunks,
        spans=options.spans,
        split=bool(options.split),
    )


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

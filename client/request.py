"""Turning the clients' keyword arguments into requests (shared by Client and AsyncClient)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bertserve.v1 import bertserve_pb2 as pb

from .results import ModelInfo
from .tensors import DTYPE_NAMES

# A batch: texts, or token sequences (lists of ids, {"input_ids": ...} mappings or TokenSequence).
Inputs = str | Sequence[str] | Sequence[Sequence[int]] | Sequence[Mapping[str, Any]]

POOLINGS = {
    "none": pb.POOLING_NONE,
    "cls": pb.POOLING_CLS,
    "pooler": pb.POOLING_POOLER,
    "mean": pb.POOLING_MEAN,
    "max": pb.POOLING_MAX,
}
AGGREGATIONS = {
    "last": pb.AGGREGATION_LAST,
    "concat_last_4": pb.AGGREGATION_CONCAT_LAST_4,
    "sum_last_4": pb.AGGREGATION_SUM_LAST_4,
    "mean_all": pb.AGGREGATION_MEAN_ALL,
}
OUTPUTS = ("sentence", "tokens")

# An Embed answer must fit in 4 MB; above this estimate the client asks over EmbedStream.
UNARY_LIMIT_BYTES = 3 * 1024 * 1024


def _choice(kind: str, value: str, table: Mapping[str, int]) -> int:
    key = value.lower().replace("-", "_")
    if key not in table:
        raise ValueError(f"unknown {kind} {value!r}; use one of: {', '.join(table)}")
    return table[key]


@dataclass(frozen=True)
class EmbedOptions:
    """The validated options of an embed call (see ``Client.embed``)."""

    sentence: bool = True
    tokens: bool = False
    pooling: int = pb.POOLING_UNSPECIFIED
    layers: tuple[int, ...] = ()
    all_layers: bool = False
    aggregate: int = pb.AGGREGATION_UNSPECIFIED
    normalize: bool = False
    dtype: int = pb.DTYPE_FLOAT32
    truncate: bool = False
    model: str = ""
    variant: str = ""

    @classmethod
    def parse(
        cls,
        *,
        output: str | Iterable[str] | None = None,
        pooling: str | None = None,
        layers: int | str | Iterable[int] | None = None,
        aggregate: str | None = None,
        normalize: bool = False,
        dtype: str = "float32",
        truncate: bool = False,
        model: str | None = None,
        variant: str | None = None,
    ) -> EmbedOptions:
        if output is None:
            # Asking only for layers means "no sentence vector" unless pooling says otherwise.
            wanted = {"sentence"} if layers is None or pooling is not None else set()
        else:
            wanted = {output} if isinstance(output, str) else set(output)
            unknown = wanted - set(OUTPUTS)
            if unknown:
                raise ValueError(
                    f"unknown output {sorted(unknown)}; use {OUTPUTS[0]!r}, {OUTPUTS[1]!r} or both "
                    "(hidden states: layers=...)"
                )
        pool = pb.POOLING_UNSPECIFIED if pooling is None else _choice("pooling", pooling, POOLINGS)
        if pool == pb.POOLING_NONE:
            wanted.discard("sentence")
        elif pooling is not None:
            wanted.add("sentence")
        all_layers = False
        layer_list: tuple[int, ...] = ()
        if isinstance(layers, str):
            if layers.strip().lower() == "all":
                all_layers = True
            else:
                try:
                    layer_list = tuple(int(x) for x in layers.split(",") if x.strip())
                except ValueError:
                    raise ValueError(
                        f"layers {layers!r}: use 'all' or comma-separated indices like -1,-2"
                    ) from None
        elif isinstance(layers, int):
            layer_list = (layers,)
        elif layers is not None:
            layer_list = tuple(int(x) for x in layers)
        if not wanted and not all_layers and not layer_list:
            raise ValueError("nothing to compute: ask for a sentence vector, tokens or layers")
        if dtype not in DTYPE_NAMES:
            raise ValueError(f"unknown dtype {dtype!r}; use one of: {', '.join(DTYPE_NAMES)}")
        return cls(
            sentence="sentence" in wanted,
            tokens="tokens" in wanted,
            pooling=pool,
            layers=layer_list,
            all_layers=all_layers,
            aggregate=pb.AGGREGATION_UNSPECIFIED
            if aggregate is None
            else _choice("aggregate", aggregate, AGGREGATIONS),
            normalize=normalize,
            dtype=DTYPE_NAMES[dtype],
            truncate=truncate,
            model=model or "",
            variant=variant or "",
        )

    @property
    def token_level(self) -> bool:
        """Whether the answer grows with the number of tokens (may need EmbedStream)."""
        return self.tokens or self.all_layers or bool(self.layers)

    @property
    def needs_info(self) -> bool:
        """Whether building the request needs the model's ModelInfo (layers, sizes, pooling)."""
        return self.token_level

    def to_request(
        self,
        inputs: Inputs,
        pairs: Sequence[str] | None = None,
        info: ModelInfo | None = None,
        request_id: str = "",
    ) -> pb.EmbedRequest:
        request = pb.EmbedRequest(
            id=request_id,
            model=self.model,
            variant=self.variant,
            token_embeddings=self.tokens,
            all_layers=self.all_layers,
            aggregate=self.aggregate,
            normalize=self.normalize,
            dtype=self.dtype,
            truncate=self.truncate,
        )
        fill_inputs(request, inputs, pairs)
        pooling = self.pooling
        if not self.sentence:
            pooling = pb.POOLING_NONE
        elif pooling == pb.POOLING_UNSPECIFIED and self.token_level:
            # UNSPECIFIED with token outputs means "no sentence vector": name the default.
            if info is None:
                raise ValueError("the model's default pooling is needed (pass info)")
            pooling = POOLINGS.get(info.default_pooling, pb.POOLING_CLS)
        request.pooling = pooling
        layers = list(self.layers)
        if info is not None:
            # Absolute indices, so the answer's names match result.hidden_states' keys.
            top = info.num_layers
            for layer in layers:
                if not -(top + 1) <= layer <= top:
                    raise ValueError(
                        f"layer {layer} out of range: model {info.name!r} has layers "
                        f"0..{top} (or -{top + 1}..-1)"
                    )
            layers = [layer + top + 1 if layer < 0 else layer for layer in layers]
        request.layers.extend(dict.fromkeys(layers))
        return request


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


def estimated_answer_bytes(request: pb.EmbedRequest, info: ModelInfo) -> int:
    """A generous estimate of the answer's size, to pick Embed or EmbedStream."""
    if request.sequences:
        tokens = sum(len(s.input_ids) for s in request.sequences)
    else:
        pairs = list(request.text_pairs) or [""] * len(request.texts)
        # A WordPiece token covers about 3 characters or more of English text;
        # an answer that still exceeds 4 MB falls back to EmbedStream.
        tokens = sum(
            min(info.max_length, math.ceil((len(t) + len(p)) / 3) + 3)
            for t, p in zip(request.texts, pairs, strict=True)
        )
    width = info.hidden_size * (4 if request.aggregate == pb.AGGREGATION_CONCAT_LAST_4 else 1)
    rows_per_token = (width if request.token_embeddings else 0) + info.hidden_size * (
        (info.num_layers + 1) if request.all_layers else len(request.layers)
    )
    itemsize = 4 if request.dtype in (pb.DTYPE_FLOAT32, pb.DTYPE_UNSPECIFIED) else 2
    return tokens * rows_per_token * itemsize


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
        pieces.append(piece)
    return pieces


def needs_stream(request: pb.EmbedRequest, info: ModelInfo | None) -> bool:
    """Whether one unary Embed could not carry this call (too many inputs or too big an
    answer for one 4 MB message)."""
    count = len(request.texts) or len(request.sequences)
    if count > SPLIT_SEQUENCES:
        return True
    return info is not None and estimated_answer_bytes(request, info) > UNARY_LIMIT_BYTES


def _texts(texts: str | Sequence[str]) -> list[str]:
    return [texts] if isinstance(texts, str) else list(texts)


def tokenize_request(
    texts: str | Sequence[str],
    pairs: str | Sequence[str] | None,
    *,
    model: str,
    pad_to: int,
    truncate: bool,
) -> pb.TokenizeRequest:
    """A TokenizeRequest for one text or many (``pairs``: their second segments)."""
    request = pb.TokenizeRequest(model=model, texts=_texts(texts), pad_to=pad_to, truncate=truncate)
    if pairs is not None:
        request.text_pairs.extend(_texts(pairs))
    return request


def classify_features(
    *,
    output: str | Iterable[str] | None,
    pooling: str | None,
    layers: int | str | Iterable[int] | None,
    aggregate: str | None,
    normalize: bool,
    dtype: str,
) -> EmbedOptions | None:
    """The embedding outputs a classify call asks for beside the labels; None: only labels."""
    if output is None and pooling is None and layers is None and aggregate is None:
        if normalize:
            raise ValueError("normalize=True needs a sentence vector: set pooling or output")
        return None
    return EmbedOptions.parse(
        output=output,
        pooling=pooling,
        layers=layers,
        aggregate=aggregate,
        normalize=normalize,
        dtype=dtype,
    )


# The fields a ClassifyRequest shares with an EmbedRequest: inputs and embedding outputs.
SHARED_FIELDS = (
    "texts",
    "text_pairs",
    "sequences",
    "token_embeddings",
    "pooling",
    "layers",
    "all_layers",
    "aggregate",
    "normalize",
    "dtype",
    "truncate",
)


def classify_request(
    inputs: Inputs,
    pairs: str | Sequence[str] | None,
    *,
    model: str,
    variant: str,
    top_k: int,
    truncate: bool,
    logits: bool = False,
    features: EmbedOptions | None = None,
    info: ModelInfo | None = None,
    request_id: str = "",
) -> pb.ClassifyRequest:
    """A ClassifyRequest for texts (``pairs``: their second segments) or token sequences;
    ``features``: embedding outputs of the same pass, parsed as for embed."""
    if top_k < 0:
        raise ValueError(f"top_k={top_k}: use 0 (every label) or a positive count")
    request = pb.ClassifyRequest(
        id=request_id,
        model=model,
        variant=variant,
        top_k=top_k,
        truncate=truncate,
        logits=logits,
    )
    if features is None:
        fill_inputs(request, inputs, pairs)
        return request
    embed = features.to_request(inputs, pairs, info)
    for name in SHARED_FIELDS:
        value = getattr(embed, name)
        if isinstance(value, str | int | bool):
            setattr(request, name, value)
        else:
            getattr(request, name).extend(value)
    request.truncate = truncate
    return request

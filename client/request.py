"""Building requests (shared by Client and AsyncClient): the options as one frozen value,
and the messages each call sends. No I/O here: see ``calls`` for what is sent when."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypedDict

from bertserve.v1 import bertserve_pb2 as pb

from . import long_text as long
from .inputs import Inputs, fill_inputs
from .results import ModelInfo
from .tensors import DTYPE_NAMES

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

OPTIONS_DOC = """
        ``output``: "sentence" (default), "tokens", or both as a tuple.
        ``pooling``: "cls", "pooler", "mean", "max" or "none"; None: the model's default.
        ``layers``: hidden states to return: an index, a list (``[-1, -2]``, negative
        counts from the last layer), "all", or "-1,-2".
        ``aggregate``: the token representation: "last", "concat_last_4", "sum_last_4",
        "mean_all". ``normalize``: L2-normalise the sentence vectors.
        ``dtype``: "float32", "float16" or "bfloat16" on the wire (bfloat16 is returned
        as float32, exactly). ``truncate``: cut sequences over the model's limit
        (``result.truncated`` tells how many tokens were dropped) instead of failing.
        ``long_text``: a text over the model's window is "truncate"d, an "error", or
        "chunk"ed into windows of ``chunk_tokens`` (default: the largest, ``info().
        chunk_tokens``) sharing ``chunk_overlap`` tokens, its vector pooled across them by
        ``chunk_pooling`` ("mean" weighted by tokens, "max", "first"); ``return_chunks``:
        also each window's vector and characters (``result.chunk_embeddings``,
        ``result.chunk_spans``). Late chunking: ``spans`` [(start, end), ...] of the text
        (or (text, start, end)), or ``split="sentences"``, give one vector per span pooled
        from the whole document's tokens (``result.span_embeddings``, ``span_offsets``).
        ``options``: an ``EmbedOptions`` instead of the keywords above.
"""


class EmbedKwargs(TypedDict, total=False):
    """The embedding options as keyword arguments (read by ``EmbedOptions.parse``)."""

    output: str | Iterable[str] | None
    pooling: str | None
    layers: int | str | Iterable[int] | None
    aggregate: str | None
    normalize: bool
    dtype: str
    truncate: bool
    long_text: str | None
    chunk_tokens: int | None
    chunk_overlap: int | None
    chunk_pooling: str | None
    return_chunks: bool
    spans: Iterable[long.SpanLike] | None
    split: str | None


# The keywords that ask a classify call for embedding outputs beside its labels.
FEATURE_WORDS = ("output", "pooling", "layers", "aggregate")


class StreamArgs(EmbedKwargs, total=False):
    """Keyword arguments of ``embed_stream`` and ``embed_many`` beside their own."""

    options: EmbedOptions | None
    model: str | None
    variant: str | None


class EmbedArgs(StreamArgs, total=False):
    """Keyword arguments of ``embed``."""

    pairs: str | Sequence[str] | None
    timeout: float | None


class ClassifyArgs(EmbedArgs, total=False):
    """Keyword arguments of ``classify``."""

    top_k: int
    logits: bool


class TokenizeArgs(TypedDict, total=False):
    """Keyword arguments of ``tokenize``."""

    pairs: str | Sequence[str] | None
    pad_to: int
    truncate: bool
    model: str | None


def _choice(kind: str, value: str, table: Mapping[str, int]) -> int:
    key = value.lower().replace("-", "_")
    if key not in table:
        raise ValueError(f"unknown {kind} {value!r}; use one of: {', '.join(table)}")
    return table[key]


@dataclass(frozen=True)
class EmbedOptions:
    """What an embed call computes, validated, in the wire's terms (see ``parse``).

    A new request option is a field here, its keyword in ``parse`` and ``EmbedKwargs``,
    and a line in ``fill``: nothing else in the client changes.
    """

    sentence: bool = True
    tokens: bool = False
    pooling: int = pb.POOLING_UNSPECIFIED
    layers: tuple[int, ...] = ()
    all_layers: bool = False
    aggregate: int = pb.AGGREGATION_UNSPECIFIED
    normalize: bool = False
    dtype: int = pb.DTYPE_FLOAT32
    truncate: bool = False
    # long documents (see ``long_text``): LongText, ChunkPooling and Split values
    long_text: int = pb.LONG_TEXT_UNSPECIFIED
    chunk_tokens: int = 0
    chunk_overlap: int | None = None
    chunk_pooling: int = pb.CHUNK_POOLING_UNSPECIFIED
    return_chunks: bool = False
    spans: tuple[tuple[int, int, int], ...] = ()
    split: int = pb.SPLIT_NONE

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
        **long_words: Any,
    ) -> EmbedOptions:
        """The options of the client's keywords (their meaning: ``Client.embed``;
        ``long_words``: the long-text keywords of ``EmbedKwargs``)."""
        longs = long.parse(**long_words)
        per_span = bool(longs["spans"]) or longs["split"] != pb.SPLIT_NONE
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
        all_layers, layer_list = _layers(layers)
        if not wanted and not all_layers and not layer_list and not per_span:
            raise ValueError(
                "nothing to compute: ask for a sentence vector, tokens, layers or spans"
            )
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
            **longs,
        )

    @classmethod
    def of(cls, options: EmbedOptions | None, words: EmbedKwargs) -> EmbedOptions:
        """``options`` as given, or parsed from the keywords ``words`` (not both)."""
        if options is None:
            return cls.parse(**words)
        if words:
            raise TypeError(f"give options= or the keywords {sorted(words)}, not both")
        return options

    @property
    def token_level(self) -> bool:
        """Whether the answer grows with the number of tokens (may need EmbedStream)."""
        return self.tokens or self.all_layers or bool(self.layers)

    @property
    def long_fields(self) -> dict[str, Any]:
        """The long-document options (``long_text.DEFAULTS``' names) as set."""
        return {name: getattr(self, name) for name in long.DEFAULTS}

    @cached_property
    def asks_long_text(self) -> bool:
        """Whether any long-document option differs from its default (Embed only)."""
        return self.long_fields != long.DEFAULTS

    @property
    def needs_info(self) -> bool:
        """Whether filling a request needs the model's ModelInfo: to make layers absolute and
        check them, to size the answer, or to name the default pooling beside token outputs."""
        return self.token_level

    @property
    def pools_by_default(self) -> bool:
        """A sentence vector by the model's default pooling (a Classify request must name it)."""
        return self.sentence and self.pooling == pb.POOLING_UNSPECIFIED

    def fill(self, request: pb.EmbedRequest | pb.ClassifyRequest, info: ModelInfo | None) -> None:
        """Set the option fields of ``request`` (Embed and Classify name them alike)."""
        request.token_embeddings = self.tokens
        request.all_layers = self.all_layers
        request.aggregate = self.aggregate
        request.normalize = self.normalize
        request.dtype = self.dtype
        request.truncate = self.truncate
        if self.asks_long_text:  # at their defaults they set nothing: no cost per call
            if not isinstance(request, pb.EmbedRequest):
                raise ValueError("long_text, chunking and spans are options of embed, not classify")
            long.fill(request, self.long_fields)
        pooling = self.pooling
        if not self.sentence:
            pooling = pb.POOLING_NONE
        elif pooling == pb.POOLING_UNSPECIFIED and info is not None:
            # Named: UNSPECIFIED beside token outputs (or on Classify) means no sentence vector.
            pooling = POOLINGS.get(info.default_pooling, pb.POOLING_CLS)
        elif pooling == pb.POOLING_UNSPECIFIED and self.token_level:
            raise ValueError("the model's default pooling is needed (pass info)")
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


def _layers(layers: int | str | Iterable[int] | None) -> tuple[bool, tuple[int, ...]]:
    """``layers`` as (all layers, indices)."""
    if layers is None:
        return False, ()
    if isinstance(layers, int):
        return False, (layers,)
    if not isinstance(layers, str):
        return False, tuple(int(x) for x in layers)
    if layers.strip().lower() == "all":
        return True, ()
    try:
        return False, tuple(int(x) for x in layers.split(",") if x.strip())
    except ValueError:
        raise ValueError(
            f"layers {layers!r}: use 'all' or comma-separated indices like -1,-2"
        ) from None


def classify_features(
    options: EmbedOptions | None, words: EmbedKwargs
) -> tuple[EmbedOptions | None, bool]:
    """The embedding outputs a classify call asks for beside its labels (None: labels only),
    and whether it truncates."""
    if options is not None:
        return EmbedOptions.of(options, words), options.truncate
    asked = [name for name in long.DEFAULTS if words.get(name) not in (None, False)]
    if asked:
        raise ValueError(f"{', '.join(asked)}: options of embed, not classify")
    if all(words.get(word) is None for word in FEATURE_WORDS):
        if words.get("normalize"):
            raise ValueError("normalize=True needs a sentence vector: set pooling or output")
        return None, bool(words.get("truncate", False))
    features = EmbedOptions.parse(**words)
    return features, features.truncate


def embed_request(
    inputs: Inputs,
    pairs: str | Sequence[str] | None,
    options: EmbedOptions,
    *,
    info: ModelInfo | None = None,
    model: str = "",
    variant: str = "",
    request_id: str = "",
) -> pb.EmbedRequest:
    """The EmbedRequest for one batch (``info``: when ``options.needs_info``)."""
    request = pb.EmbedRequest(id=request_id, model=model, variant=variant)
    fill_inputs(request, inputs, pairs)
    options.fill(request, info)
    for span in options.spans:
        if span[0] >= len(request.texts):
            raise ValueError(
                f"span {span} names text {span[0]} of a call with {len(request.texts)} texts"
                + ("" if request.texts else " (spans go with texts, not token sequences)")
            )
    return request


def classify_request(
    inputs: Inputs,
    pairs: str | Sequence[str] | None,
    *,
    top_k: int = 0,
    logits: bool = False,
    truncate: bool = False,
    features: EmbedOptions | None = None,
    info: ModelInfo | None = None,
    model: str = "",
    variant: str = "",
    request_id: str = "",
) -> pb.ClassifyRequest:
    """A ClassifyRequest for texts (``pairs``: their second segments) or token sequences;
    ``features``: embedding outputs of the same pass (``info``: the model's, to name its
    default pooling and make layers absolute)."""
    if top_k < 0:
        raise ValueError(f"top_k={top_k}: use 0 (every label) or a positive count")
    request = pb.ClassifyRequest(
        id=request_id, model=model, variant=variant, top_k=top_k, logits=logits
    )
    fill_inputs(request, inputs, pairs)
    if features is not None:
        features.fill(request, info)
    request.truncate = truncate
    return request


def tokenize_request(
    texts: str | Sequence[str],
    pairs: str | Sequence[str] | None = None,
    *,
    model: str = "",
    pad_to: int = 0,
    truncate: bool = False,
) -> pb.TokenizeRequest:
    """A TokenizeRequest for one text or many (``pairs``: their second segments)."""
    request = pb.TokenizeRequest(model=model, texts=_texts(texts), pad_to=pad_to, truncate=truncate)
    if pairs is not None:
        request.text_pairs.extend(_texts(pairs))
    return request


def _texts(texts: str | Sequence[str]) -> list[str]:
    return [texts] if isinstance(texts, str) else list(texts)

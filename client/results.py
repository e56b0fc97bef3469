"""What the client hands back: plain dataclasses holding numpy arrays."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from bertserve.v1 import bertserve_pb2 as pb

from .tensors import tensor_to_numpy

# Outputs kept as they come: one row per text, window or span (not split by lengths).
PER_ROW_OUTPUTS = (
    "sentence_embedding",
    "chunk_embeddings",
    "chunk_spans",
    "span_embeddings",
    "span_offsets",
)
# Rows [text, start, end) whose text index counts from the answering piece's first text.
TEXT_INDEXED_OUTPUTS = ("chunk_spans", "span_offsets")

POOLING_NAMES = {
    pb.POOLING_UNSPECIFIED: "",
    pb.POOLING_NONE: "none",
    pb.POOLING_CLS: "cls",
    pb.POOLING_POOLER: "pooler",
    pb.POOLING_MEAN: "mean",
    pb.POOLING_MAX: "max",
}


@dataclass(frozen=True)
class Timing:
    """Where the server spent the time of one request (nanoseconds) and how many tokens it ran."""

    tokenization_ns: int = 0
    queue_ns: int = 0
    inference_ns: int = 0
    total_ns: int = 0
    tokens: int = 0  # real tokens of the request
    computed_tokens: int = 0  # tokens the model computed for it, padding included

    @classmethod
    def from_pb(cls, timing: pb.Timing) -> Timing:
        return cls(**{name: getattr(timing, name) for name in cls.__dataclass_fields__})


def split_rows(packed: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    """Cut a packed ``(sum(lengths), ...)`` array into one view per sequence."""
    if packed.shape[0] != int(lengths.sum()):
        raise ValueError(
            f"packed output has {packed.shape[0]} rows but the lengths add up to {lengths.sum()}"
        )
    return np.split(packed, np.cumsum(lengths)[:-1]) if len(lengths) else []


@dataclass
class EmbedResult:
    """The features of one batch, in the order of its inputs.

    - ``sentence_embedding``: ``(batch, hidden)`` array, or None when not asked for
      (``hidden * 4`` with ``aggregate="concat_last_4"``).
    - ``token_embeddings``: one ``(length_i, hidden)`` array per sequence (real tokens
      only, ``[CLS]`` first), or None.
    - ``hidden_states``: ``{layer: [ (length_i, hidden) per sequence ]}`` keyed by the
      absolute layer index (0 = embedding output, ``num_layers`` = last layer).
    - ``lengths``/``truncated``: ``(batch,)`` int arrays of real and dropped tokens
      (``long_text="chunk"``: a long text's tokens, all of them, and 0).
    - ``chunk_embeddings``/``chunk_spans``: with ``return_chunks``, each window's vector
      ``(chunks, hidden)`` and ``(chunks, 3)`` int32 rows ``[text, start, end)`` of the
      characters it covers, text 0's windows first; else None.
    - ``span_embeddings``/``span_offsets``: late chunking (``spans``/``split``), one vector
      per span ``(spans, hidden)`` and its ``(spans, 3)`` int32 ``[text, start, end)``.
    - ``outputs``: every output as the server sent it, packed: ``{name: array}``.

    Arrays are float32 (also for ``dtype="bfloat16"``, decoded exactly) or float16
    with ``dtype="float16"``; they are read-only views on the received bytes.
    """

    model: str
    variant: str
    lengths: np.ndarray
    truncated: np.ndarray
    outputs: dict[str, np.ndarray]
    timing: Timing
    id: str = ""
    sentence_embedding: np.ndarray | None = None
    token_embeddings: list[np.ndarray] | None = None
    hidden_states: dict[int, list[np.ndarray]] = field(default_factory=dict)
    chunk_embeddings: np.ndarray | None = None
    chunk_spans: np.ndarray | None = None
    span_embeddings: np.ndarray | None = None
    span_offsets: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.lengths)

    @classmethod
    def from_pb(cls, response: pb.EmbedResponse, num_layers: int | None = None) -> EmbedResult:
        """From a whole answer (a unary Embed's; ``num_layers`` as for ``from_outputs``)."""
        outputs = {piece.name: tensor_to_numpy(piece.tensor) for piece in response.outputs}
        return cls.from_outputs(response, outputs, num_layers)

    @classmethod
    def from_outputs(
        cls, first: pb.EmbedResponse, outputs: dict[str, np.ndarray], num_layers: int | None = None
    ) -> EmbedResult:
        """Build the result from an answer's first chunk and its assembled outputs.

        ``num_layers`` turns negative layer names (``hidden_states.-1``) into absolute ones.
        """
        lengths = np.asarray(first.lengths, dtype=np.int64)
        truncated = np.asarray(first.truncated, dtype=np.int64)
        if truncated.size == 0:
            truncated = np.zeros_like(lengths)
        result = cls(
            model=first.model,
            variant=first.variant,
            lengths=lengths,
            truncated=truncated,
            outputs=outputs,
            timing=Timing.from_pb(first.timing),
            id=first.id,
        )
        for name, array in outputs.items():
            if name in PER_ROW_OUTPUTS:
                setattr(result, name, array)
            elif name == "token_embeddings":
                result.token_embeddings = split_rows(array, lengths)
            elif name.startswith("hidden_states."):
                layer = int(name.split(".", 1)[1])
                if layer < 0 and num_layers is not None:
                    layer += num_layers + 1
                result.hidden_states[layer] = split_rows(array, lengths)
        result.hidden_states = dict(sorted(result.hidden_states.items()))
        return result


def join_results(parts: list[EmbedResult], num_layers: int | None = None) -> EmbedResult:
    """One result of several answers to consecutive pieces of one batch, inputs in order."""
    if len(parts) == 1:
        return parts[0]
    timing = pb.Timing(
        **{
            name: sum(getattr(p.timing, name) for p in parts)
            for name in Timing.__dataclass_fields__
        }
    )
    first = pb.EmbedResponse(
        model=parts[0].model,
        variant=parts[0].variant,
        lengths=np.concatenate([p.lengths for p in parts]).tolist(),
        truncated=np.concatenate([p.truncated for p in parts]).tolist(),
        timing=timing,
        id=parts[0].id.rsplit("/", 1)[0],
    )
    firsts = np.cumsum([0] + [len(p.lengths) for p in parts[:-1]])
    outputs = {}
    for name in dict.fromkeys(name for p in parts for name in p.outputs):
        arrays = []
        for first_text, part in zip(firsts, parts, strict=True):
            if name not in part.outputs:  # e.g. a piece whose texts have no spans
                continue
            array = part.outputs[name]
            if name in TEXT_INDEXED_OUTPUTS and first_text:
                array = array.copy()
                array[:, 0] += first_text
            arrays.append(array)
        outputs[name] = np.concatenate(arrays)
    return EmbedResult.from_outputs(first, outputs, num_layers)


@dataclass(frozen=True)
class Encoding:
    """One tokenized sequence: parallel lists of tokens, ids, masks and character offsets."""

    tokens: list[str]
    input_ids: list[int]
    attention_mask: list[int]
    token_type_ids: list[int]
    offsets: list[tuple[int, int]]
    special_tokens_mask: list[bool]
    truncated: int = 0

    @classmethod
    def from_pb(cls, encoding: pb.Encoding) -> Encoding:
        return cls(
            tokens=list(encoding.tokens),
            input_ids=list(encoding.input_ids),
            attention_mask=list(encoding.attention_mask),
            token_type_ids=list(encoding.token_type_ids),
            offsets=[(o.start, o.end) for o in encoding.offsets],
            special_tokens_mask=list(encoding.special_tokens_mask),
            truncated=encoding.truncated,
        )


@dataclass(frozen=True)
class VariantInfo:
    name: str
    precision: str
    execution_provider: str
    loaded: bool
    size_bytes: int


@dataclass(frozen=True)
class ModelInfo:
    """What a server says about one model (``default_pooling`` is "cls", "mean", ...)."""

    name: str
    architecture: str
    num_layers: int
    hidden_size: int
    num_heads: int
    intermediate_size: int
    max_length: int
    vocab_size: int
    lowercase: bool
    random_weights: bool
    source: str
    default_pooling: str
    default_variant: str
    variants: list[VariantInfo]
    labels: list[str]
    is_default: bool
    default_variant_reason: str = ""  # configured, or the device's default
    # long_text="chunk": the largest (and default) window in content tokens, its overlap
    chunk_tokens: int = 0
    chunk_overlap: int = 0

    @classmethod
    def from_pb(cls, info: pb.ModelInfo) -> ModelInfo:
        return cls(
            name=info.name,
            architecture=info.architecture,
            num_layers=info.num_layers,
            hidden_size=info.hidden_size,
            num_heads=info.num_heads,
            intermediate_size=info.intermediate_size,
            max_length=info.max_length,
            vocab_size=info.vocab_size,
            lowercase=info.lowercase,
            random_weights=info.random_weights,
            source=info.source,
            default_pooling=POOLING_NAMES.get(info.default_pooling, ""),
            default_variant=info.default_variant,
            default_variant_reason=info.default_variant_reason,
            variants=[
                VariantInfo(v.name, v.precision, v.execution_provider, v.loaded, v.size_bytes)
                for v in info.variants
            ],
            labels=list(info.labels),
            is_default=info.is_default,
            chunk_tokens=info.chunk_tokens,
            chunk_overlap=info.chunk_overlap,
        )


@dataclass(frozen=True)
class Classification:
    """One input's best ``label`` and ``scores``: label -> probability, best first (top_k)."""

    label: str
    scores: dict[str, float]


@dataclass
class ClassifyResult:
    """The labels of one batch, in the order of its inputs; indexable like a list.

    - ``labels``: the best label of each input; ``results[i].scores`` its probabilities.
    - ``logits``: ``(batch, labels)`` float32 when asked for (``logits=True``), else None.
    - ``features``: the embedding outputs of the same forward pass as an ``EmbedResult``
      (``sentence_embedding``, ``token_embeddings``, ``hidden_states``), or None.
    """

    model: str
    variant: str
    results: list[Classification]
    timing: Timing
    logits: np.ndarray | None = None
    features: EmbedResult | None = None
    id: str = ""

    @property
    def labels(self) -> list[str]:
        return [r.label for r in self.results]

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index: int) -> Classification:
        return self.results[index]

    @classmethod
    def from_pb(
        cls, response: pb.ClassifyResponse, num_layers: int | None = None
    ) -> ClassifyResult:
        """From an answer (``num_layers`` turns negative layer names absolute, as for embed)."""
        outputs = {piece.name: tensor_to_numpy(piece.tensor) for piece in response.outputs}
        features = {k: v for k, v in outputs.items() if k != "logits"}
        return cls(
            model=response.model,
            variant=response.variant,
            results=[
                Classification(r.label, {s.label: s.score for s in r.labels})
                for r in response.results
            ],
            timing=Timing.from_pb(response.timing),
            logits=outputs.get("logits"),
            # the answer carries lengths, truncated and timing under Embed's names
            features=EmbedResult.from_outputs(response, features, num_layers)  # type: ignore[arg-type]
            if features
            else None,
            id=response.id,
        )

"""The core's request and result types: plain values, no protocol."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

# Documented maximum lengths of identifiers (UTF-8 bytes): longer ones are INVALID_ARGUMENT,
# so an id copied into each answer message and a name echoed in an error stay small.
MAX_ID_BYTES = 256
MAX_NAME_BYTES = 256
# More `layers` entries than this cannot name distinct layers of any model we serve; refused
# before the list is walked.
MAX_LAYER_ENTRIES = 256

POOLINGS = ("default", "model", "none", "cls", "pooler", "mean", "max")
AGGREGATIONS = ("last", "concat_last_4", "sum_last_4", "mean_all")
DTYPES = ("float32", "float16", "bfloat16")
# What happens to a text longer than the model's window: "" follows ``truncate`` (today's
# behaviour: "truncate" when set, else "error").
LONG_TEXTS = ("", "truncate", "error", "chunk")
CHUNK_POOLINGS = ("mean", "max", "first")
SPLITS = ("", "sentences")

IntSequence = Sequence[int] | np.ndarray


@dataclass(frozen=True)
class Options:
    """Every feature option of a request, in the core's terms.

    ``pooling``: "default" (the model's unless other outputs are asked for), "model" (the
    model's), "none" or one of
    cls/pooler/mean/max. ``layers``: as asked (negative counts from the last), checked against
    the model; ``all_layers`` adds every layer. ``logits``: a classifier's logits.
    """

    token_embeddings: bool = False
    pooling: str = "default"
    layers: tuple[int, ...] = ()
    all_layers: bool = False
    aggregate: str = "last"
    normalize: bool = False
    dtype: str = "float32"
    truncate: bool = False
    logits: bool = False
    # Long documents (see bertserve.v1's LongText). ``chunk_tokens`` 0: the model's window
    # minus its special tokens; ``chunk_overlap`` None: chunk_tokens // 8.
    long_text: str = ""
    chunk_tokens: int = 0
    chunk_overlap: int | None = None
    chunk_pooling: str = "mean"
    return_chunks: bool = False
    # Late chunking: (text index, start, end) character spans, or split="sentences".
    spans: tuple[tuple[int, int, int], ...] = ()
    split: str = ""


@dataclass(frozen=True)
class Texts:
    """Texts, with an optional second segment per text."""

    texts: Sequence[str]
    pairs: Sequence[str] | None = None

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class TokenSequence:
    """Pre-tokenized ids; the mask and type ids default to ones and zeros. Any int sequence:
    the core checks lengths before walking it."""

    input_ids: IntSequence
    attention_mask: IntSequence | None = None
    token_type_ids: IntSequence | None = None


@dataclass(frozen=True)
class Tokens:
    sequences: Sequence[TokenSequence]

    def __len__(self) -> int:
        return len(self.sequences)


@dataclass(frozen=True)
class Request:
    """One request to the core: what to compute, on which model."""

    inputs: Texts | Tokens
    options: Options = Options()
    id: str = ""
    model: str = ""
    variant: str = ""


@dataclass
class Timing:
    tokenization_ns: int = 0
    queue_ns: int = 0
    inference_ns: int = 0
    total_ns: int = 0
    tokens: int = 0
    computed_tokens: int = 0


@dataclass
class Result:
    """What the core answers: packed outputs (token-level (total_tokens, width), per sequence
    (sequences, width), float32), the real and dropped tokens per sequence, and timing.

    Long documents add "chunk_embeddings" (chunks, width) float32 with "chunk_spans"
    (chunks, 3) int32 [text, start, end) (``return_chunks``), and "span_embeddings"
    (spans, width) float32 with "span_offsets" (spans, 3) int32 (late chunking). The int32
    outputs keep their dtype whatever ``dtype`` asks. With CHUNK a long text is one sequence:
    its ``lengths`` entry counts the tokens of the whole text, ``truncated`` is 0."""

    outputs: dict[str, np.ndarray]
    lengths: list[int]
    truncated: list[int]
    timing: Timing = field(default_factory=Timing)

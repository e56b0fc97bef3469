"""bertserve.v1 protobuf <-> core types, with plain values: no model needed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from bertserve.server.core.request import (
    MAX_LAYER_ENTRIES,
    Options,
    Request,
    Result,
    Texts,
    Timing,
    Tokens,
    TokenSequence,
)
from bertserve.server.errors import Field, InvalidArgument, v1_field
from bertserve.server.features import convert, softmax
from bertserve.v1 import bertserve_pb2 as pb

# gRPC's default limit on a received message; answers stay below it with room for framing.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
CHUNK_BYTES = MAX_MESSAGE_BYTES - 64 * 1024

POOLINGS = {
    pb.POOLING_UNSPECIFIED: "default",
    pb.POOLING_NONE: "none",
    pb.POOLING_CLS: "cls",
    pb.POOLING_POOLER: "pooler",
    pb.POOLING_MEAN: "mean",
    pb.POOLING_MAX: "max",
}
POOLING_PB = {name: value for value, name in POOLINGS.items() if value > pb.POOLING_NONE}
AGGREGATIONS = {
    pb.AGGREGATION_UNSPECIFIED: "last",
    pb.AGGREGATION_LAST: "last",
    pb.AGGREGATION_CONCAT_LAST_4: "concat_last_4",
    pb.AGGREGATION_SUM_LAST_4: "sum_last_4",
    pb.AGGREGATION_MEAN_ALL: "mean_all",
}
DTYPES = {
    pb.DTYPE_UNSPECIFIED: "float32",
    pb.DTYPE_FLOAT32: "float32",
    pb.DTYPE_FLOAT16: "float16",
    pb.DTYPE_BFLOAT16: "bfloat16",
}
DTYPE_PB = {"float32": pb.DTYPE_FLOAT32, "float16": pb.DTYPE_FLOAT16, "bfloat16": pb.DTYPE_BFLOAT16}
LONG_TEXTS = {
    pb.LONG_TEXT_UNSPECIFIED: "",
    pb.LONG_TEXT_TRUNCATE: "truncate",
    pb.LONG_TEXT_ERROR: "error",
    pb.LONG_TEXT_CHUNK: "chunk",
}
CHUNK_POOLINGS = {
    pb.CHUNK_POOLING_UNSPECIFIED: "mean",
    pb.CHUNK_POOLING_MEAN: "mean",
    pb.CHUNK_POOLING_MAX: "max",
    pb.CHUNK_POOLING_FIRST: "first",
}
SPLITS = {pb.SPLIT_NONE: "", pb.SPLIT_SENTENCES: "sentences"}
FIELDS = {"pairs": "text_pairs"}


def field_name(field: Field) -> str:
    """A core field path in bertserve.v1's words: ``sequences[0].input_ids[3]``."""
    return v1_field(tuple(FIELDS.get(p, p) if isinstance(p, str) else p for p in field))


def _enum(table: dict[int, str], enum: object, value: int, name: str) -> str:
    if value not in table:
        allowed = [enum.Name(v) for v in table]  # type: ignore[attr-defined]
        try:
            shown = enum.Name(value)  # type: ignore[attr-defined]
        except ValueError:
            shown = str(value)
        raise InvalidArgument(f"={shown}: unknown or not allowed here; allowed {allowed}", (name,))
    return table[value]


def options(request: pb.EmbedRequest | pb.ClassifyRequest, classify: bool = False) -> Options:
    """The options of an EmbedRequest, or of a ClassifyRequest (logits; no pooling unless
    asked for)."""
    if len(request.layers) > MAX_LAYER_ENTRIES:  # refused before the list is walked
        raise InvalidArgument(
            f"{len(request.layers)} entries; allowed at most {MAX_LAYER_ENTRIES}", ("layers",)
        )
    pooling = _enum(POOLINGS, pb.Pooling, request.pooling, "pooling")
    if classify and pooling == "default":
        pooling = "none"
    result = Options(
        token_embeddings=request.token_embeddings,
        pooling=pooling,
        layers=tuple(request.layers),
        all_layers=request.all_layers,
        aggregate=_enum(AGGREGATIONS, pb.Aggregation, request.aggregate, "aggregate"),
        normalize=request.normalize,
        dtype=_enum(DTYPES, pb.DType, request.dtype, "dtype"),
        truncate=request.truncate,
        logits=classify,
        **(long_text(request) if isinstance(request, pb.EmbedRequest) else {}),
    )
    asks = (
        result.token_embeddings
        or result.layers
        or result.all_layers
        or pooling != "none"
        or result.spans
        or result.split
    )
    if not (asks or classify):
        raise InvalidArgument(
            "no output asked for: set token_embeddings, a pooling other than POOLING_NONE, "
            "layers, all_layers, spans or split"
        )
    if classify and result.normalize and pooling == "none":
        raise InvalidArgument(
            "=true: needs a sentence embedding; set pooling (Classify returns none unless asked)",
            ("normalize",),
        )
    return result


def long_text(request: pb.EmbedRequest) -> dict[str, Any]:
    """The long-document options of an EmbedRequest (ranges are the core's to check)."""
    if not (
        request.long_text
        or request.spans
        or request.split
        or request.chunk_tokens
        or request.chunk_pooling
        or request.return_chunks
        or request.HasField("chunk_overlap")
    ):  # the usual request: the defaults, without building them (per-call cost, issue 15)
        return {}
    return {
        "long_text": _enum(LONG_TEXTS, pb.LongText, request.long_text, "long_text"),
        "chunk_tokens": request.chunk_tokens,
        "chunk_overlap": request.chunk_overlap if request.HasField("chunk_overlap") else None,
        "chunk_pooling": _enum(
            CHUNK_POOLINGS, pb.ChunkPooling, request.chunk_pooling, "chunk_pooling"
        ),
        "return_chunks": request.return_chunks,
        # bounded by the message size: at most ~4 MiB / 6 bytes a span
        "spans": tuple((s.text, s.start, s.end) for s in request.spans),
        "split": _enum(SPLITS, pb.Split, request.split, "split"),
    }


def inputs(request: pb.EmbedRequest | pb.ClassifyRequest) -> Texts | Tokens:
    """Exactly one of texts or sequences, pairs matching texts. The repeated fields are
    referenced, not copied: the core checks their lengths before walking them."""
    if request.texts and request.sequences:
        raise InvalidArgument(
            f"texts ({len(request.texts)}) and sequences ({len(request.sequences)}) both given; "
            "allowed: exactly one of them"
        )
    if request.texts:
        if request.text_pairs and len(request.text_pairs) != len(request.texts):
            raise InvalidArgument(
                f"{len(request.text_pairs)} given for {len(request.texts)} texts; allowed: "
                "none or one per text",
                ("pairs",),
            )
        return Texts(request.texts, request.text_pairs or None)
    if request.sequences:
        return Tokens(_Sequences(request.sequences))
    raise InvalidArgument("empty input: no texts and no sequences; allowed: one or more of either")


class _Sequences(Sequence[TokenSequence]):
    """A request's sequences, wrapped one at a time as the core reads them (after it has
    checked their count)."""

    def __init__(self, sequences: Sequence[pb.TokenSequence]) -> None:
        self._sequences = sequences

    def __len__(self) -> int:
        return len(self._sequences)

    def __getitem__(self, index: int) -> TokenSequence:  # type: ignore[override]
        s = self._sequences[index]
        return TokenSequence(s.input_ids, s.attention_mask, s.token_type_ids)


def embed_request(request: pb.EmbedRequest) -> Request:
    return Request(inputs(request), options(request), request.id, request.model, request.variant)


def classify_request(request: pb.ClassifyRequest) -> Request:
    return Request(
        inputs(request),
        options(request, classify=True),
        request.id,
        request.model,
        request.variant,
    )


# -- to protobuf -----------------------------------------------------------------------------


def tensor(array: np.ndarray, dtype: str) -> pb.Tensor:
    """A wire tensor of a float32 array in ``dtype``; an int32 array (chunk_spans,
    span_offsets) stays DTYPE_INT32 whatever ``dtype`` says."""
    if array.dtype == np.int32:
        data = array.astype("<i4", copy=False).tobytes()
        return pb.Tensor(dtype=pb.DTYPE_INT32, shape=list(array.shape), data=data)
    wire = convert(array, dtype)
    return pb.Tensor(dtype=DTYPE_PB[dtype], shape=list(array.shape), data=wire.tobytes())


def wire_itemsize(array: np.ndarray, dtype: str) -> int:
    """Bytes per value of ``array`` on the wire (see ``tensor``)."""
    if array.dtype == np.int32:
        return 4
    return 4 if dtype == "float32" else 2


def timing_pb(timing: Timing) -> pb.Timing:
    return pb.Timing(
        tokenization_ns=timing.tokenization_ns,
        queue_ns=timing.queue_ns,
        inference_ns=timing.inference_ns,
        total_ns=timing.total_ns,
        tokens=timing.tokens,
        computed_tokens=timing.computed_tokens,
    )


def embed_responses(
    request_id: str,
    model: str,
    variant: str,
    result: Result,
    dtype: str,
    chunk_bytes: int = CHUNK_BYTES,
) -> list[pb.EmbedResponse]:
    """The answer in one or more messages, each under ``chunk_bytes``: outputs whole when they
    fit, else split into row ranges (TensorPiece). The id (at most MAX_ID_BYTES) is in each."""
    head = pb.EmbedResponse(
        id=request_id,
        model=model,
        variant=variant,
        lengths=result.lengths,
        truncated=result.truncated,
        timing=timing_pb(result.timing),
    )
    budget = chunk_bytes - head.ByteSize() - 1024
    messages: list[pb.EmbedResponse] = [head]
    used = 0
    for name, array in result.outputs.items():
        rows = array.shape[0]
        if not rows:  # e.g. split=sentences on a blank text: no spans, the output still named
            empty = pb.TensorPiece(name=name, total_rows=0, tensor=tensor(array, dtype))
            messages[-1].outputs.append(empty)
            used += 64
            continue
        row_bytes = max(1, int(np.prod(array.shape[1:])) * wire_itemsize(array, dtype))
        offset = 0
        while offset < rows:
            room = (budget - used) // row_bytes
            if room < 1 and used > 0:
                messages.append(pb.EmbedResponse(id=request_id))
                used = 0
                continue
            take = min(rows - offset, max(room, 1))
            piece = array[offset : offset + take]
            messages[-1].outputs.append(
                pb.TensorPiece(
                    name=name, row_offset=offset, total_rows=rows, tensor=tensor(piece, dtype)
                )
            )
            used += take * row_bytes + 64  # 64: the piece's own fields
            offset += take
    for index, message in enumerate(messages):
        message.chunk = index
        message.last = index == len(messages) - 1
    return messages


def classify_response(
    request: pb.ClassifyRequest,
    model: str,
    variant: str,
    labels: list[str],
    result: Result,
    dtype: str,
) -> pb.ClassifyResponse:
    """Labels best first with their probabilities (softmax of the logits), up to top_k; the
    logits and embedding outputs when asked for, each whole."""
    logits = result.outputs["logits"]
    probabilities = softmax(logits)
    top_k = min(request.top_k or len(labels), len(labels))
    best_first = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
    response = pb.ClassifyResponse(
        id=request.id,
        model=model,
        variant=variant,
        results=[
            pb.Classification(
                label=labels[order[0]],
                labels=[pb.LabelScore(label=labels[i], score=float(row[i])) for i in order],
            )
            for row, order in zip(probabilities, best_first, strict=True)
        ],
        timing=timing_pb(result.timing),
        lengths=result.lengths,
        truncated=result.truncated,
    )
    for name, array in result.outputs.items():
        if name == "logits" and not request.logits:
            continue
        wire = "float32" if name == "logits" else dtype
        response.outputs.append(
            pb.TensorPiece(
                name=name, row_offset=0, total_rows=array.shape[0], tensor=tensor(array, wire)
            )
        )
    return response


def encoding_pb(encoding: object, truncated: int) -> pb.Encoding:
    return pb.Encoding(
        tokens=encoding.tokens,  # type: ignore[attr-defined]
        input_ids=encoding.ids,  # type: ignore[attr-defined]
        attention_mask=encoding.attention_mask,  # type: ignore[attr-defined]
        token_type_ids=encoding.type_ids,  # type: ignore[attr-defined]
        offsets=[pb.Offset(start=s, end=e) for s, e in encoding.offsets],  # type: ignore[attr-defined]
        special_tokens_mask=[bool(x) for x in encoding.special_tokens_mask],  # type: ignore[attr-defined]
        truncated=truncated,
    )


def tokenize_response(model: str, encodings: list, dropped: list[int]) -> pb.TokenizeResponse:
    return pb.TokenizeResponse(
        model=model, encodings=[encoding_pb(e, d) for e, d in zip(encodings, dropped, strict=True)]
    )

"""Conversion between protobuf messages and the server's domain types (from_pb / to_pb)."""

from __future__ import annotations

import dataclasses

import numpy as np
from bertserve.server.errors import InvalidArgument
from bertserve.server.features import FeatureSpec, convert, softmax
from bertserve.server.models import EmbedResult, LoadedVariant, ModelRegistry
from bertserve.v1 import bertserve_pb2 as pb

# gRPC's default limit on a received message; answers stay below it with room for framing.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
CHUNK_BYTES = MAX_MESSAGE_BYTES - 64 * 1024

POOLINGS = {
    pb.POOLING_NONE: None,
    pb.POOLING_CLS: "cls",
    pb.POOLING_POOLER: "pooler",
    pb.POOLING_MEAN: "mean",
    pb.POOLING_MAX: "max",
}
POOLING_PB = {name: value for value, name in POOLINGS.items() if name}
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


def _enum_name(enum: object, value: int) -> str:
    try:
        return enum.Name(value)  # type: ignore[attr-defined]
    except ValueError:
        return str(value)


def feature_spec(
    request: pb.EmbedRequest | pb.ClassifyRequest, variant: LoadedVariant
) -> FeatureSpec:
    """The validated outputs an EmbedRequest (or a ClassifyRequest's embedding fields) asks
    for."""
    top = variant.num_layers
    layers: list[int] = []
    for index, layer in enumerate(request.layers):
        if not -(top + 1) <= layer <= top:
            raise InvalidArgument(
                f"layers[{index}]={layer}: no such layer; allowed {-(top + 1)}..{top} "
                f"(0 is the embedding output, {top} or -1 the last layer)"
            )
        absolute = layer % (top + 1)
        if absolute not in layers:
            layers.append(absolute)
    if request.all_layers:
        layers = list(range(top + 1))
    if request.aggregate not in AGGREGATIONS:
        raise InvalidArgument(
            f"aggregate={request.aggregate}: unknown; allowed "
            f"{[_enum_name(pb.Aggregation, a) for a in AGGREGATIONS]}"
        )
    aggregate = AGGREGATIONS[request.aggregate]
    if aggregate in ("concat_last_4", "sum_last_4") and top < 4:
        raise InvalidArgument(f"aggregate={aggregate}: the model has only {top} layers; needs 4")
    if request.dtype not in DTYPES:
        raise InvalidArgument(
            f"dtype={_enum_name(pb.DType, request.dtype)}: not an output dtype; allowed "
            "DTYPE_FLOAT32, DTYPE_FLOAT16, DTYPE_BFLOAT16"
        )
    if request.pooling == pb.POOLING_UNSPECIFIED:
        asks_other = request.token_embeddings or layers
        pooling = None if asks_other else variant.model.manifest.get("default_pooling", "cls")
    elif request.pooling in POOLINGS:
        pooling = POOLINGS[request.pooling]
    else:
        raise InvalidArgument(
            f"pooling={request.pooling}: unknown; allowed "
            f"{[_enum_name(pb.Pooling, p) for p in POOLINGS]}"
        )
    if request.normalize and pooling is None:
        raise InvalidArgument("normalize=true: needs a sentence embedding; set pooling")
    spec = FeatureSpec(
        num_layers=top,
        token_embeddings=request.token_embeddings,
        pooling=pooling,
        layers=tuple(layers),
        aggregate=aggregate,
        normalize=request.normalize,
        dtype=DTYPES[request.dtype],
    )
    if not (spec.token_embeddings or spec.pooling or spec.layers):
        raise InvalidArgument(
            "no output asked for: set token_embeddings, a pooling other than POOLING_NONE, "
            "layers or all_layers"
        )
    return spec


def check_inputs(request: pb.EmbedRequest | pb.ClassifyRequest) -> None:
    """Exactly one of texts or sequences, pairs matching texts."""
    sequences = getattr(request, "sequences", [])
    if request.texts and sequences:
        raise InvalidArgument(
            f"texts ({len(request.texts)}) and sequences ({len(sequences)}) both given; "
            "allowed: exactly one of them"
        )
    if not request.texts and not sequences:
        raise InvalidArgument(
            "empty input: no texts and no sequences; allowed: one or more of either"
        )
    if request.text_pairs and len(request.text_pairs) != len(request.texts):
        raise InvalidArgument(
            f"text_pairs: {len(request.text_pairs)} given for {len(request.texts)} texts; "
            "allowed: none or one per text"
        )


def raw_sequences(
    request: pb.EmbedRequest | pb.ClassifyRequest,
) -> list[tuple[list[int], list[int], list[int]]]:
    return [
        (list(s.input_ids), list(s.attention_mask), list(s.token_type_ids))
        for s in request.sequences
    ]


def tensor(array: np.ndarray, dtype: str) -> pb.Tensor:
    """A wire tensor of a float32 array in ``dtype``."""
    wire = convert(array, dtype)
    return pb.Tensor(dtype=DTYPE_PB[dtype], shape=list(array.shape), data=wire.tobytes())


def embed_responses(
    request: pb.EmbedRequest,
    variant: LoadedVariant,
    result: EmbedResult,
    dtype: str,
    timing: pb.Timing,
    chunk_bytes: int = CHUNK_BYTES,
) -> list[pb.EmbedResponse]:
    """The answer in one or more messages, each under ``chunk_bytes``: outputs whole when they
    fit, else split into row ranges (TensorPiece)."""
    head = pb.EmbedResponse(
        id=request.id,
        model=variant.model.name,
        variant=variant.package.name,
        lengths=result.lengths,
        truncated=result.truncated,
        timing=timing,
    )
    budget = chunk_bytes - head.ByteSize() - 1024
    itemsize = 4 if dtype == "float32" else 2
    messages: list[pb.EmbedResponse] = [head]
    used = 0
    for name, array in result.outputs.items():
        rows = array.shape[0]
        row_bytes = max(1, int(np.prod(array.shape[1:])) * itemsize)
        offset = 0
        while offset < rows:
            room = (budget - used) // row_bytes
            if room < 1 and used > 0:
                messages.append(pb.EmbedResponse(id=request.id))
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


def model_info_pb(registry: ModelRegistry, name: str) -> pb.ModelInfo:
    """ModelInfo from the manifests and what is loaded."""
    model = registry.model(name)
    manifest = model.manifest
    default_variant = registry.default_variants[model.name]
    variants = [
        pb.VariantInfo(
            name=variant.name,
            precision=variant.precision,
            execution_provider=registry.provider(model.name, variant.name),
            loaded=(model.name, variant.name) in registry.loaded,
            size_bytes=variant.size_bytes,
        )
        for variant in model.variants.values()
    ]
    return pb.ModelInfo(
        name=model.name,
        architecture=str(manifest.get("architecture", "BertModel")),
        num_layers=int(manifest.get("num_layers", 0)),
        hidden_size=int(manifest.get("hidden_size", 0)),
        num_heads=int(manifest.get("num_heads", 0)),
        intermediate_size=int(manifest.get("intermediate_size", 0)),
        max_length=int(manifest.get("max_length", 0)),
        vocab_size=int(manifest.get("vocab_size", 0)),
        lowercase=bool(manifest.get("lowercase", False)),
        random_weights=bool(manifest.get("random_weights", False)),
        source=str(manifest.get("source", "")),
        default_pooling=POOLING_PB.get(manifest.get("default_pooling", "cls"), pb.POOLING_CLS),
        default_variant=default_variant,
        default_variant_reason=registry.default_reasons.get(model.name, ""),
        variants=variants,
        labels=list(manifest.get("labels") or []),
        is_default=model.name == registry.default_model,
    )


def timing_pb(result: EmbedResult, tokenization_ns: int) -> pb.Timing:
    """Where a request's time went (total_ns is set by the caller when the answer is ready)."""
    return pb.Timing(
        tokenization_ns=tokenization_ns,
        queue_ns=result.queue_ns,
        inference_ns=result.inference_ns,
        tokens=result.tokens,
        computed_tokens=result.computed_tokens,
    )


def classify_spec(request: pb.ClassifyRequest, variant: LoadedVariant) -> FeatureSpec:
    """The logits, plus the embedding outputs a ClassifyRequest asks for (none by default)."""
    pools = request.pooling not in (pb.POOLING_UNSPECIFIED, pb.POOLING_NONE)
    if request.normalize and not pools:
        raise InvalidArgument(
            "normalize=true: needs a sentence embedding; set pooling (Classify returns none "
            "unless asked)"
        )
    if not (pools or request.token_embeddings or request.layers or request.all_layers):
        return FeatureSpec(num_layers=variant.num_layers, logits=True)
    return dataclasses.replace(feature_spec(request, variant), logits=True)


def classify_response(
    request: pb.ClassifyRequest,
    variant: LoadedVariant,
    labels: list[str],
    result: EmbedResult,
    spec: FeatureSpec,
    timing: pb.Timing,
) -> pb.ClassifyResponse:
    """Labels best first with their probabilities (softmax of the logits), up to top_k; the
    logits and embedding outputs when asked for, each whole."""
    logits = result.outputs["logits"]
    probabilities = softmax(logits)
    top_k = min(request.top_k or len(labels), len(labels))
    best_first = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
    response = pb.ClassifyResponse(
        id=request.id,
        model=variant.model.name,
        variant=variant.package.name,
        results=[
            pb.Classification(
                label=labels[order[0]],
                labels=[pb.LabelScore(label=labels[i], score=float(row[i])) for i in order],
            )
            for row, order in zip(probabilities, best_first, strict=True)
        ],
        timing=timing,
        lengths=result.lengths,
        truncated=result.truncated,
    )
    for name, array in result.outputs.items():
        if name == "logits" and not request.logits:
            continue
        dtype = "float32" if name == "logits" else spec.dtype
        response.outputs.append(
            pb.TensorPiece(
                name=name, row_offset=0, total_rows=array.shape[0], tensor=tensor(array, dtype)
            )
        )
    return response

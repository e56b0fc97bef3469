"""The BertService servicer: thin handlers, codec -> core -> codec."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import grpc
from bertserve.server.core.chunking import chunk_defaults
from bertserve.server.core.engine import Admit, Engine, answer_limit
from bertserve.server.core.engine import check_answer_size as check_size
from bertserve.server.core.request import MAX_ID_BYTES, MAX_NAME_BYTES, Texts
from bertserve.server.core.stream import StreamBuffer, run_stream
from bertserve.server.core.validate import check_identifier
from bertserve.server.errors import (
    FailedPrecondition,
    InvalidArgument,
    reason_of,
    status_of,
)
from bertserve.server.repository import max_length_of
from bertserve.server.rpc import code_of, record, refuse_if_draining, unary
from bertserve.server.v1 import codec
from bertserve.server.v1.codec import CHUNK_BYTES, field_name
from bertserve.v1 import bertserve_pb2 as pb
from bertserve.v1 import bertserve_pb2_grpc

# Below this many answer bytes the messages are built on the event loop: a thread hop would
# cost more than the work.
INLINE_ANSWER_BYTES = 256 * 1024
UNARY_LIMIT = "the 4 MiB message limit of unary Embed"
TOKENIZE_LIMIT = "the 4 MiB message limit"
UNARY_ADVICE = "use EmbedStream, which sends it in chunks, or ask for fewer outputs or sequences"


class BertServicer(bertserve_pb2_grpc.BertServiceServicer):
    """Serves every model of the engine's registry over bertserve.v1."""

    field_name = staticmethod(field_name)
    # refused before computing: the answer could not travel in one message
    _unary_admit = staticmethod(answer_limit(CHUNK_BYTES, UNARY_LIMIT, UNARY_ADVICE))

    def __init__(self, engine: Engine, config: Any) -> None:
        self.engine = engine
        self.registry = engine.registry
        self.config = config

    async def _embed(
        self, request: pb.EmbedRequest, timeout: float | None, admit: Admit
    ) -> list[pb.EmbedResponse]:
        core_request = codec.embed_request(request)
        result, spec, variant = await self.engine.embed(core_request, timeout, admit)
        args = (request.id, variant.model.name, variant.package.name, result, spec.dtype)
        if sum(array.nbytes for array in result.outputs.values()) <= INLINE_ANSWER_BYTES:
            return codec.embed_responses(*args)
        return await asyncio.to_thread(codec.embed_responses, *args)

    @unary("Embed")
    async def Embed(
        self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> pb.EmbedResponse:
        responses = await self._embed(request, context.time_remaining(), self._unary_admit)
        if len(responses) > 1:  # the estimate was a little short
            size = sum(r.ByteSize() for r in responses)
            check_size(size, CHUNK_BYTES, UNARY_LIMIT, UNARY_ADVICE, estimated=False)
        return responses[0]

    async def EmbedStream(
        self, request_iterator: AsyncIterator[pb.EmbedRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.EmbedResponse]:
        """Each request answered as it completes; failures travel in-band as ``error``; an id
        already in flight on the stream is refused."""
        await refuse_if_draining(self.engine, context)

        async def work(request: pb.EmbedRequest, admit: Admit) -> list[pb.EmbedResponse]:
            if not request.id:
                raise InvalidArgument(
                    "empty; EmbedStream needs an id per request to match answers", ("id",)
                )
            return await self._embed(request, context.time_remaining(), admit)

        def failed(request: pb.EmbedRequest, error: Exception) -> list[pb.EmbedResponse]:
            code, message = status_of(error, field_name)
            error_pb = pb.Error(code=code.value[0], message=message, reason=reason_of(error))
            return [pb.EmbedResponse(id=request.id[:MAX_ID_BYTES], error=error_pb, last=True)]

        def done(request: pb.EmbedRequest, error: BaseException | None, seconds: float) -> None:
            code = code_of(error, "EmbedStream", request.id[:64])
            record("EmbedStream.item", code, seconds, request.id[:64])

        buffer = StreamBuffer(self.config.stream_buffer_bytes, self.config.max_answer_bytes)
        stream = run_stream(
            self.engine, request_iterator, buffer, work, failed, done, key=lambda r: r.id
        )
        async for response in stream:
            yield response

    @unary("Tokenize")
    async def Tokenize(
        self, request: pb.TokenizeRequest, context: grpc.aio.ServicerContext
    ) -> pb.TokenizeResponse:
        texts = Texts(request.texts, request.text_pairs or None)
        if request.text_pairs and len(request.text_pairs) != len(request.texts):
            raise InvalidArgument(
                f"{len(request.text_pairs)} given for {len(request.texts)} texts; allowed: "
                "none or one per text",
                ("pairs",),
            )
        encodings, dropped, variant = await self.engine.tokenize(
            texts, request.model, request.truncate, request.pad_to, CHUNK_BYTES
        )
        response = await asyncio.to_thread(
            codec.tokenize_response, variant.model.name, encodings, dropped
        )
        advice = "send fewer or shorter texts per request"
        check_size(response.ByteSize(), CHUNK_BYTES, TOKENIZE_LIMIT, advice, estimated=False)
        return response

    @unary("Classify")
    async def Classify(
        self, request: pb.ClassifyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ClassifyResponse:
        check_identifier(request.model, "model", MAX_NAME_BYTES)
        model = self.registry.classifier(request.model)
        labels = self.registry.labels(model.name)
        if not labels:
            raise FailedPrecondition(
                f"model {model.name!r} has no classification head (its manifest lists no labels); "
                "Classify needs a model exported from a fine-tuned sequence-classification "
                "checkpoint (bertserve finetune). Use Embed for features"
            )
        admit = answer_limit(
            CHUNK_BYTES,
            "the 4 MiB message limit of Classify",
            "ask for fewer embedding outputs or sequences, or take token-level features from "
            "EmbedStream",
        )
        # the model the rule chose, when the request names none
        core_request = dataclasses.replace(codec.classify_request(request), model=model.name)
        result, spec, variant = await self.engine.embed(
            core_request, context.time_remaining(), admit
        )
        return codec.classify_response(
            request, variant.model.name, variant.package.name, labels, result, spec.dtype
        )

    @unary("ModelInfo")
    async def ModelInfo(
        self, request: pb.ModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInfoResponse:
        return pb.ModelInfoResponse(model=model_info_pb(self.registry, request.model))

    @unary("ListModels")
    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(
            models=[model_info_pb(self.registry, n) for n in self.registry.models]
        )


def model_info_pb(registry: Any, name: str) -> pb.ModelInfo:
    """ModelInfo from the manifests and what is loaded."""
    check_identifier(name, "model", MAX_NAME_BYTES)
    model = registry.model(name)
    manifest = model.manifest
    max_length = int(manifest.get("max_length", 0))
    chunk_tokens, chunk_overlap = chunk_defaults(max_length_of(manifest))
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
        max_length=max_length,
        vocab_size=int(manifest.get("vocab_size", 0)),
        lowercase=bool(manifest.get("lowercase", False)),
        random_weights=bool(manifest.get("random_weights", False)),
        source=str(manifest.get("source", "")),
        default_pooling=codec.POOLING_PB.get(
            manifest.get("default_pooling", "cls"), pb.POOLING_CLS
        ),
        default_variant=registry.default_variants[model.name],
        default_variant_reason=registry.default_reasons.get(model.name, ""),
        variants=variants,
        labels=list(manifest.get("labels") or []),
        is_default=model.name == registry.default_model,
        chunk_tokens=chunk_tokens,
        chunk_overlap=chunk_overlap,
    )

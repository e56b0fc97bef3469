"""The BertService servicer: thin handlers, from_pb -> model/batcher -> to_pb."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from bertserve.server import metrics, protocol
from bertserve.server.errors import (
    REASON_KEY,
    AnswerTooLarge,
    BertServeError,
    FailedPrecondition,
    InvalidArgument,
    Unavailable,
    reason_of,
    status_of,
)
from bertserve.server.features import FeatureSpec, answer_bytes
from bertserve.server.limits import StreamBuffer, check_sequence_count
from bertserve.server.models import EmbedResult, LoadedVariant, ModelRegistry
from bertserve.server.tokenize import Sequence
from bertserve.v1 import bertserve_pb2 as pb
from bertserve.v1 import bertserve_pb2_grpc

log = logging.getLogger(__name__)
Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])
# ``admit(estimated answer bytes)``: runs before computing; may refuse or wait for room
Admit = Callable[[int], Awaitable[None]]

# Requests one EmbedStream works on at once; the stream's reader waits beyond it (backpressure).
STREAM_CONCURRENCY = 64
# Below these sizes work stays on the event loop: a thread hop would cost more than the work.
INLINE_TEXTS = 16
INLINE_CHARS = 4096
INLINE_ANSWER_BYTES = 256 * 1024


def log_call(method: str, code: grpc.StatusCode, seconds: float, request_id: str) -> None:
    """One structured line per call: DEBUG when it succeeded, INFO when it failed."""
    level = logging.DEBUG if code == grpc.StatusCode.OK else logging.INFO
    if log.isEnabledFor(level):
        fields = {"method": method, "code": code.name, "ms": round(seconds * 1000, 3)}
        log.log(level, "call", extra={**fields, "request_id": request_id})


def unary(method: str) -> Callable[[Handler], Handler]:
    """Count and time the RPC; turn domain errors into their status code and anything else
    into a logged INTERNAL (the last-resort handler)."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            code = grpc.StatusCode.OK

            def record() -> None:
                seconds = time.perf_counter() - started
                metrics.REQUESTS.labels(method, code.name).inc()
                metrics.REQUEST_SECONDS.labels(method).observe(seconds)
                log_call(method, code, seconds, getattr(request, "id", ""))

            try:
                if self.draining:
                    raise Unavailable("the server is shutting down; retry on another replica")
                answer = await handler(self, request, context)
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                record()
                raise
            except Exception as error:
                code, message = status_of(error)
                if not isinstance(error, BertServeError):
                    log.exception("%s failed", method)
                # abort sends the status at once: count the call first, so a caller that
                # reads the metrics after its error sees it
                record()
                reason = reason_of(error)
                trailer = ((REASON_KEY, reason),) if reason else ()
                await context.abort(code, message, trailing_metadata=trailer)
            record()
            return answer

        return wrapper  # type: ignore[return-value]

    return decorate


def check_answer_size(
    size: int, limit: int, where: str, advice: str, estimated: bool = True
) -> None:
    """AnswerTooLarge (RESOURCE_EXHAUSTED) naming the size, the limit and what to do."""
    if size > limit:
        raise AnswerTooLarge(
            f"the answer {'would be' if estimated else 'is'} {size / 2**20:.1f} MiB, over "
            f"{where}; {advice}"
        )


def admit_up_to(limit: int, where: str, advice: str) -> Admit:
    """An ``admit`` that refuses, before any compute, answers estimated over ``limit`` bytes."""

    async def admit(size: int) -> None:
        check_answer_size(size, limit, where, advice)

    return admit


def check_classifier(variant: LoadedVariant) -> None:
    """FAILED_PRECONDITION when a model that lists labels lacks its logits output."""
    if "logits" not in variant.runtime.output_names:
        raise FailedPrecondition(
            f"variant {variant.package.name!r} of model {variant.model.name!r} lists labels but "
            "its model.onnx has no logits output; export the fine-tuned checkpoint again"
        )


class BertServicer(bertserve_pb2_grpc.BertServiceServicer):
    """Serves every model of a ModelRegistry."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self.config = registry.config
        self.draining = False
        self.ready = False  # True once the default variants are loaded and warmed up

    # refused before computing: the answer could not travel in one message
    _unary_admit = staticmethod(
        admit_up_to(
            protocol.CHUNK_BYTES,
            "the 4 MiB message limit of unary Embed",
            "use EmbedStream, which sends it in chunks, or ask for fewer outputs or sequences",
        )
    )

    async def _embed(
        self,
        request: pb.EmbedRequest,
        timeout: float | None,
        admit: Admit,
    ) -> list[pb.EmbedResponse]:
        """The answer's messages; ``admit(estimated answer bytes)`` runs before computing and
        may refuse (AnswerTooLarge) or wait for room (a stream's buffer)."""
        started = time.monotonic_ns()
        variant = await self.registry.variant(request.model, request.variant)
        protocol.check_inputs(request)
        spec = protocol.feature_spec(request, variant)
        result, tokenization_ns = await self.compute(request, variant, spec, timeout, admit)
        timing = protocol.timing_pb(result, tokenization_ns)
        if sum(array.nbytes for array in result.outputs.values()) <= INLINE_ANSWER_BYTES:
            responses = protocol.embed_responses(request, variant, result, spec.dtype, timing)
        else:
            responses = await asyncio.to_thread(
                protocol.embed_responses, request, variant, result, spec.dtype, timing
            )
        responses[0].timing.total_ns = time.monotonic_ns() - started
        return responses

    @unary("Embed")
    async def Embed(
        self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> pb.EmbedResponse:
        check_sequence_count(
            len(request.texts) + len(request.sequences), self.config.max_request_sequences
        )
        responses = await self._embed(request, context.time_remaining(), self._unary_admit)
        if len(responses) > 1:  # the estimate was a little short
            check_answer_size(
                sum(r.ByteSize() for r in responses),
                protocol.CHUNK_BYTES,
                "the 4 MiB message limit of unary Embed",
                "use EmbedStream, which sends it in chunks, or ask for fewer outputs or sequences",
                estimated=False,
            )
        return responses[0]

    async def EmbedStream(
        self, request_iterator: AsyncIterator[pb.EmbedRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.EmbedResponse]:
        """Each request answered as it completes; failures travel in-band as ``error``."""

        async def work(request: pb.EmbedRequest, admit: Admit) -> list[pb.EmbedResponse]:
            if not request.id:
                raise InvalidArgument(
                    "id: empty; EmbedStream needs an id per request to match answers"
                )
            check_sequence_count(
                len(request.texts) + len(request.sequences), self.config.max_request_sequences
            )
            return await self._embed(request, context.time_remaining(), admit)

        def failed(request: pb.EmbedRequest, error: Exception) -> list[pb.EmbedResponse]:
            code, message = status_of(error)
            error_pb = pb.Error(code=code.value[0], message=message, reason=reason_of(error))
            return [pb.EmbedResponse(id=request.id, error=error_pb, last=True)]

        async for response in self.stream("EmbedStream", request_iterator, context, work, failed):
            yield response

    async def stream(
        self,
        method: str,
        request_iterator: AsyncIterator[Any],
        context: grpc.aio.ServicerContext,
        work: Callable[[Any, Admit], Awaitable[list[Any]]],
        failed: Callable[[Any, Exception], list[Any]],
    ) -> AsyncIterator[Any]:
        """A bidirectional stream of requests, each answered as it completes by the messages
        ``work(request, admit)`` returns, or in-band by ``failed(request, error)``.

        Bounded both ways: at most STREAM_CONCURRENCY requests read and not yet sent, and at
        most ``stream_buffer_bytes`` of answers computed and not yet sent (``admit`` waits for
        room before a request is computed). A slot and its bytes free only when the answer has
        been handed to gRPC, so a caller that stops reading stops its stream's work.
        """
        if self.draining:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                "the server is shutting down; retry on another replica",
                trailing_metadata=((REASON_KEY, "DRAINING"),),
            )
        buffer = StreamBuffer(self.config.stream_buffer_bytes, self.config.max_answer_bytes)
        answers: asyncio.Queue[tuple[list[Any], int] | None] = asyncio.Queue()
        slots = asyncio.Semaphore(STREAM_CONCURRENCY)
        tasks: set[asyncio.Task] = set()

        async def answer(request: Any) -> None:
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            reserved = 0

            async def admit(size: int) -> None:
                nonlocal reserved
                await buffer.reserve(size)
                reserved = size

            try:
                if self.draining:
                    raise Unavailable("the server is shutting down; retry on another replica")
                responses = await work(request, admit)
            except Exception as error:
                if reserved:
                    await buffer.release(reserved)
                    reserved = 0
                code, _ = status_of(error)
                if not isinstance(error, BertServeError):
                    log.exception("%s request %r failed", method, request.id)
                responses = failed(request, error)
            finally:
                log_call(method, code, time.perf_counter() - started, request.id)
                metrics.REQUESTS.labels(f"{method}.item", code.name).inc()
                metrics.REQUEST_SECONDS.labels(f"{method}.item").observe(
                    time.perf_counter() - started
                )
            answers.put_nowait((responses, reserved))

        async def read() -> None:
            try:
                async for request in request_iterator:
                    await slots.acquire()
                    task = asyncio.create_task(answer(request))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                while tasks:
                    await asyncio.gather(*list(tasks), return_exceptions=True)
            finally:
                answers.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (item := await answers.get()) is not None:
                chunks, reserved = item
                try:
                    for chunk in chunks:
                        yield chunk
                finally:
                    slots.release()
                    if reserved:
                        await buffer.release(reserved)
            await reader
        finally:
            reader.cancel()
            for task in list(tasks):
                task.cancel()
            buffer.close()

    @unary("Tokenize")
    async def Tokenize(
        self, request: pb.TokenizeRequest, context: grpc.aio.ServicerContext
    ) -> pb.TokenizeResponse:
        model = self.registry.model(request.model)
        variant = await self.registry.variant(model.name)
        if not request.texts:
            raise InvalidArgument("texts: empty; allowed: one or more texts")
        if request.pad_to > variant.max_length:
            raise InvalidArgument(
                f"pad_to={request.pad_to}: over the model's limit; allowed 0..{variant.max_length}"
            )
        check_sequence_count(len(request.texts), self.config.max_request_sequences)
        # tokenizing and building the answer both grow with the text: off the event loop
        response = await asyncio.to_thread(self._tokenize, request, model.name, variant)
        size = response.ByteSize()
        if size > protocol.CHUNK_BYTES:
            raise AnswerTooLarge(
                f"the Tokenize answer is {size / 2**20:.1f} MiB, over the 4 MiB message limit; "
                "send fewer or shorter texts per request"
            )
        return response

    @staticmethod
    def _tokenize(
        request: pb.TokenizeRequest, model: str, variant: LoadedVariant
    ) -> pb.TokenizeResponse:
        texts, pairs = list(request.texts), list(request.text_pairs) or None
        encodings, dropped = variant.tokenizer.encode_counted(
            texts, pairs, truncate=request.truncate
        )
        if request.pad_to:
            for encoding in encodings:
                variant.tokenizer.pad(encoding, request.pad_to)
        return pb.TokenizeResponse(
            model=model,
            encodings=[protocol.encoding_pb(e, d) for e, d in zip(encodings, dropped, strict=True)],
        )

    @unary("Classify")
    async def Classify(
        self, request: pb.ClassifyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ClassifyResponse:
        started = time.monotonic_ns()
        model = self.registry.model(request.model)
        labels = self.registry.labels(model.name)
        if not labels:
            raise FailedPrecondition(
                f"model {model.name!r} has no classification head (its manifest lists no labels); "
                "Classify needs a model exported from a fine-tuned sequence-classification "
                "checkpoint (bertserve finetune). Use Embed for features"
            )
        variant = await self.registry.variant(request.model, request.variant)
        check_classifier(variant)
        protocol.check_inputs(request)
        check_sequence_count(
            len(request.texts) + len(request.sequences), self.config.max_request_sequences
        )
        spec = protocol.classify_spec(request, variant)
        admit = admit_up_to(
            protocol.CHUNK_BYTES,
            "the 4 MiB message limit of Classify",
            "ask for fewer embedding outputs or sequences, or take token-level features from "
            "EmbedStream",
        )
        result, tokenization_ns = await self.compute(
            request, variant, spec, context.time_remaining(), admit
        )
        timing = protocol.timing_pb(result, tokenization_ns)
        response = protocol.classify_response(request, variant, labels, result, spec, timing)
        response.timing.total_ns = time.monotonic_ns() - started
        return response

    async def compute(
        self,
        request: pb.EmbedRequest | pb.ClassifyRequest,
        variant: LoadedVariant,
        spec: FeatureSpec,
        timeout: float | None,
        admit: Admit,
    ) -> tuple[EmbedResult, int]:
        """The work every front door shares: queue admission, tokenizing (or checking token
        ids), the answer's size through ``admit`` before any compute, then the batcher.
        Returns the result and the tokenization time in ns."""
        # a request the queue could never hold, or that finds it full, is refused before work
        variant.batcher.admit(len(request.texts) or len(request.sequences))
        tokenize_start = time.monotonic_ns()
        sequences = await self._sequences(request, variant)
        tokenization_ns = time.monotonic_ns() - tokenize_start
        size = answer_bytes(spec, sum(map(len, sequences)), len(sequences), variant.hidden_size)
        await admit(size)
        return await variant.embed(sequences, spec, timeout), tokenization_ns

    async def _sequences(
        self, request: pb.EmbedRequest | pb.ClassifyRequest, variant: LoadedVariant
    ) -> list[Sequence]:
        """The request's texts tokenized, or its token sequences checked; off the event loop
        when there are many."""
        if request.texts:
            texts, pairs = list(request.texts), list(request.text_pairs) or None
            if len(texts) <= INLINE_TEXTS and sum(map(len, texts)) <= INLINE_CHARS:
                return variant.tokenize(texts, pairs, request.truncate)
            return await asyncio.to_thread(variant.tokenize, texts, pairs, request.truncate)
        if len(request.sequences) <= INLINE_TEXTS:
            return variant.check_sequences(protocol.raw_sequences(request), request.truncate)
        return await asyncio.to_thread(  # checking many sequences takes a while
            lambda: variant.check_sequences(protocol.raw_sequences(request), request.truncate)
        )

    @unary("ModelInfo")
    async def ModelInfo(
        self, request: pb.ModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInfoResponse:
        return pb.ModelInfoResponse(model=protocol.model_info_pb(self.registry, request.model))

    @unary("ListModels")
    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(
            models=[protocol.model_info_pb(self.registry, n) for n in self.registry.models]
        )

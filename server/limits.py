"""What every RPC passes before a servicer sees it, and the per-request and per-stream bounds.

- Bytes that do not decode as the method's request (garbage, truncated, invalid UTF-8 in a
  string field) are the caller's error: INVALID_ARGUMENT naming the message type, where gRPC
  alone answers UNKNOWN.
- At most ``max_concurrent_rpcs`` BertService and v2 inference calls (ModelInfer,
  ModelStreamInfer) run at once; beyond, RESOURCE_EXHAUSTED before anything is tokenized. Health,
  reflection and the v2 health and metadata calls are not counted, so probes still answer under
  overload.
- A gauge counts the calls in flight.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
from bertserve.server import metrics
from bertserve.server.errors import REASON_KEY, BertServeError, InvalidArgument, status_of

SERVICE_PREFIX = "/bertserve.v1.BertService/"
# the calls that do work, counted against max_concurrent_rpcs
COUNTED = (
    SERVICE_PREFIX,
    "/inference.GRPCInferenceService/ModelInfer",
    "/inference.GRPCInferenceService/ModelStreamInfer",
)


class MalformedRequest:
    """Stands in for a request whose bytes did not decode, so the handler can answer
    INVALID_ARGUMENT (a deserializer that raises makes gRPC answer UNKNOWN)."""

    def __init__(self, method: str, size: int, error: BaseException) -> None:
        self.message = (
            f"the {size} bytes sent to {method} do not decode as its request message "
            f"({error}); send that message type serialized with protobuf (see the service's .proto)"
        )


def _tolerant(method: str, deserializer: Callable[[bytes], Any] | None) -> Callable:
    def deserialize(data: bytes) -> Any:
        if deserializer is None:
            return data
        try:
            return deserializer(data)
        except Exception as error:  # DecodeError, UnicodeDecodeError, ...
            return MalformedRequest(method, len(data), error)

    return deserialize


def _method_handler(
    handler: grpc.RpcMethodHandler, behavior: Callable, deserializer: Callable | None = None
) -> grpc.RpcMethodHandler:
    """A handler of the same kind and serializers as ``handler`` running ``behavior``."""
    kind = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(handler.request_streaming, handler.response_streaming)]
    return kind(
        behavior,
        request_deserializer=deserializer or handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _inner(handler: grpc.RpcMethodHandler) -> Callable:
    return {
        (False, False): handler.unary_unary,
        (False, True): handler.unary_stream,
        (True, False): handler.stream_unary,
        (True, True): handler.stream_stream,
    }[(handler.request_streaming, handler.response_streaming)]


async def _responses(result: Any) -> AsyncIterator[Any]:
    """What a streaming handler answers: an async generator's items, or nothing when it is a
    coroutine that writes with ``context.write`` (as grpc.health.v1's Watch does)."""
    if hasattr(result, "__aiter__"):
        async for response in result:
            yield response
    else:
        await result


def refusal(
    handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str, reason: str = ""
) -> grpc.RpcMethodHandler:
    """A handler shaped like ``handler`` that answers ``code`` without reading the request."""
    trailer = ((REASON_KEY, reason),) if reason else ()

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message, trailing_metadata=trailer)

    if handler.response_streaming:

        async def refuse_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await refuse(request, context)
            yield  # pragma: no cover - abort raises

        return _method_handler(handler, refuse_stream)
    return _method_handler(handler, refuse)


class GuardInterceptor(grpc.aio.ServerInterceptor):
    """Bad bytes → INVALID_ARGUMENT; the concurrency cap; the in-flight gauge."""

    def __init__(self, max_concurrent_rpcs: int) -> None:
        self.max_concurrent_rpcs = max_concurrent_rpcs
        self.in_flight = 0

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None:
            return None
        method = details.method
        counted = method.startswith(COUNTED)
        inner = _inner(handler)
        deserializer = _tolerant(method, handler.request_deserializer)

        async def admit(context: grpc.aio.ServicerContext) -> None:
            if counted and self.in_flight >= self.max_concurrent_rpcs:
                metrics.REQUESTS.labels(method.rsplit("/", 1)[-1], "RESOURCE_EXHAUSTED").inc()
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"server busy: {self.in_flight} calls in flight, the limit "
                    f"(max_concurrent_rpcs) is {self.max_concurrent_rpcs}; retry with backoff "
                    "or on another replica",
                    trailing_metadata=((REASON_KEY, "OVERLOADED"),),
                )
            if counted:
                self.in_flight += 1
                metrics.IN_FLIGHT.inc()

        def leave() -> None:
            if counted:
                self.in_flight -= 1
                metrics.IN_FLIGHT.dec()

        async def checked(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, MalformedRequest):
                metrics.REQUESTS.labels(method.rsplit("/", 1)[-1], "INVALID_ARGUMENT").inc()
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
            return request

        async def checked_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
            index = 0
            async for request in requests:
                if isinstance(request, MalformedRequest):
                    # raised, not aborted here: this runs in the servicer's reading task, and
                    # sending a status while the handler sends a message fails in gRPC's core
                    # (the caller then waited for its deadline); `streaming` aborts instead
                    raise InvalidArgument(f"message {index} of the stream: {request.message}")
                yield request
                index += 1

        if not handler.request_streaming and not handler.response_streaming:

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                request = await checked(request, context)
                await admit(context)
                try:
                    return await inner(request, context)
                finally:
                    leave()

            return _method_handler(handler, unary, deserializer)

        if not handler.request_streaming:

            async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                request = await checked(request, context)
                await admit(context)
                try:
                    async for response in _responses(inner(request, context)):
                        yield response
                finally:
                    leave()

            return _method_handler(handler, unary_stream, deserializer)

        async def streaming(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
            await admit(context)
            try:
                if handler.response_streaming:
                    responses = inner(checked_stream(requests), context)
                    async for response in _responses(responses):
                        yield response
                else:  # no such method today; kept for completeness of the handler kinds
                    yield await inner(checked_stream(requests), context)
            except BertServeError as error:  # a bad message ends the stream with its status
                code, message = status_of(error)
                metrics.REQUESTS.labels(method.rsplit("/", 1)[-1], code.name).inc()
                await context.abort(code, message)
            finally:
                leave()

        return _method_handler(handler, streaming, deserializer)

"""What every RPC passes before a servicer sees it, and the per-request and per-stream bounds.

- Bytes that do not decode as the method's request (garbage, truncated, invalid UTF-8 in a
  string field) are the caller's error: INVALID_ARGUMENT naming the message type, where gRPC
  alone answers UNKNOWN.
- At most ``max_concurrent_rpcs`` BertService and v2 inference calls (ModelInfer,
  ModelStreamInfer) run at once; beyond, RESOURCE_EXHAUSTED before anything is tokenized. Health,
  reflection and the v2 health and metadata calls are not counted, so probes still answer under
  overload.
- The slots are shared: one connection holds at most ``max_rpcs_per_peer`` of them, and streams
  never take the last ``unary_reserved_rpcs``, so idle or slow streams cannot lock out unary
  calls.
- A counted stream that neither sends a request nor gets an answer for ``stream_idle_timeout_s``
  is closed with DEADLINE_EXCEEDED, freeing its slot.
- A gauge counts the calls in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
from bertserve.server import metrics
from bertserve.server.errors import REASON_KEY, BertServeError, InvalidArgument, status_of
from bertserve.server.malformed import MalformedRequest, protocol_of, tolerant

SERVICE_PREFIX = "/bertserve.v1.BertService/"
# the calls that do work, counted against max_concurrent_rpcs
COUNTED = (
    SERVICE_PREFIX,
    "/inference.GRPCInferenceService/ModelInfer",
    "/inference.GRPCInferenceService/ModelStreamInfer",
)


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


class Slots:
    """Who holds the concurrency slots: every counted call, the streams, each connection.

    ``refusal`` says why a new call cannot have a slot (None: it can); ``take`` and ``give``
    hold and free one. Everything runs on the event loop, so no lock is needed.
    """

    def __init__(self, total: int, per_peer: int | None = None, streams: int | None = None) -> None:
        self.total = total
        self.per_peer = total if per_peer is None else per_peer
        self.streams_limit = total if streams is None else streams
        self.in_flight = 0
        self.streams = 0
        self.by_peer: dict[str, int] = {}

    def refusal(self, peer: str, streaming: bool) -> str | None:
        if self.in_flight >= self.total:
            return (
                f"server busy: {self.in_flight} calls in flight, the limit "
                f"(max_concurrent_rpcs) is {self.total}; retry with backoff or on another replica"
            )
        if streaming and self.streams >= self.streams_limit:
            return (
                f"server busy: {self.streams} streams open, the most streams may hold "
                f"(max_concurrent_rpcs={self.total} less unary_reserved_rpcs="
                f"{self.total - self.streams_limit}); unary calls are still served; retry the "
                "stream with backoff or on another replica"
            )
        held = self.by_peer.get(peer, 0)
        # A stream may idle, so a connection's streams never go past its share. A unary call
        # holds its slot only while its work runs: past its share a connection may borrow
        # spare slots, as long as a whole share stays free for the other connections.
        spare = self.total - self.in_flight
        if held >= self.per_peer and (streaming or spare <= self.per_peer):
            return (
                f"this connection has {held} calls in flight, its share of the server "
                f"(max_rpcs_per_peer) is {self.per_peer} of max_concurrent_rpcs={self.total}"
                + ("" if streaming else f" and the {spare} spare slots are kept for others")
                + "; wait for some to finish, or spread the calls over more connections or "
                "replicas"
            )
        return None

    def take(self, peer: str, streaming: bool) -> None:
        self.in_flight += 1
        self.streams += streaming
        self.by_peer[peer] = self.by_peer.get(peer, 0) + 1

    def give(self, peer: str, streaming: bool) -> None:
        self.in_flight -= 1
        self.streams -= streaming
        left = self.by_peer[peer] - 1
        if left:
            self.by_peer[peer] = left
        else:
            del self.by_peer[peer]


class IdleWatch:
    """Cancels ``task`` once nothing has been ``touch``ed for ``timeout`` seconds while no
    request waits for its answer (one timer a stream, re-armed only when it fires: a touch is
    one clock read). A stream whose request is still being computed is busy, not idle."""

    def __init__(self, timeout: float, task: asyncio.Task) -> None:
        self.timeout = timeout
        self.task = task
        self.loop = asyncio.get_running_loop()
        self.last = self.loop.time()
        self.fired = False
        self.waiting = 0  # requests read whose last answer has not been sent
        self.handle = self.loop.call_later(timeout, self._check)

    def touch(self) -> None:
        self.last = self.loop.time()

    def request(self) -> None:
        self.waiting += 1
        self.last = self.loop.time()

    def answer(self, response: Any) -> None:
        # a chunked bertserve.v1 answer ends with ``last``; every v2 stream response is whole
        if getattr(response, "last", True):
            self.waiting = max(0, self.waiting - 1)
        self.last = self.loop.time()

    def _check(self) -> None:
        idle = self.loop.time() - self.last
        if self.waiting or idle < self.timeout:
            later = self.timeout if self.waiting else self.timeout - idle
            self.handle = self.loop.call_later(later, self._check)
        else:
            self.fired = True
            self.task.cancel()

    def stop(self) -> None:
        self.handle.cancel()


class GuardInterceptor(grpc.aio.ServerInterceptor):
    """Bad bytes → INVALID_ARGUMENT; the shared concurrency slots; idle streams closed; the
    in-flight gauge."""

    def __init__(
        self,
        max_concurrent_rpcs: int,
        max_rpcs_per_peer: int | None = None,
        stream_limit: int | None = None,
        stream_idle_timeout_s: float = 0.0,
    ) -> None:
        self.max_concurrent_rpcs = max_concurrent_rpcs
        self.slots = Slots(max_concurrent_rpcs, max_rpcs_per_peer, stream_limit)
        self.stream_idle_timeout_s = stream_idle_timeout_s
        # method -> (the handler it had, that handler wrapped)
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    @property
    def in_flight(self) -> int:
        return self.slots.in_flight

    def idle_message(self) -> str:
        return (
            f"this stream sent no request and got no answer for {self.stream_idle_timeout_s:g} s, "
            "this server's limit (stream_idle_timeout_s): closed to free its slot for other "
            "callers; open a stream when there is work to send, and close it when done"
        )

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None:
            return None
        method = details.method
        # the wrappers depend only on the method and its handler: built once, not per call
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """``handler`` behind the guard: decode check, slot, idle watch, in-flight gauge."""
        short = method.rsplit("/", 1)[-1]
        counted = method.startswith(COUNTED)
        streaming = bool(handler.request_streaming)
        inner = _inner(handler)
        deserializer = tolerant(method, handler.request_deserializer)
        slots = self.slots

        async def admit(context: grpc.aio.ServicerContext) -> str:
            """Take a slot for this call (or abort); returns the peer that holds it."""
            if not counted:
                return ""
            peer = context.peer() or ""
            why = slots.refusal(peer, streaming)
            if why is not None:
                metrics.REQUESTS.labels(short, "RESOURCE_EXHAUSTED").inc()
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    why,
                    trailing_metadata=((REASON_KEY, "OVERLOADED"),),
                )
            slots.take(peer, streaming)
            metrics.IN_FLIGHT.inc()
            return peer

        def leave(peer: str) -> None:
            if counted:
                slots.give(peer, streaming)
                metrics.IN_FLIGHT.dec()

        async def checked(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, MalformedRequest):
                metrics.REQUESTS.labels(short, "INVALID_ARGUMENT").inc()
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
            return request

        item = protocol_of(method)[0]

        async def checked_stream(
            requests: AsyncIterator[Any], watch: IdleWatch | None
        ) -> AsyncIterator[Any]:
            index = 0
            async for request in requests:
                if watch is not None:
                    watch.request()
                if isinstance(request, MalformedRequest):
                    # raised, not aborted here: this runs in the servicer's reading task, and
                    # sending a status while the handler sends a message fails in gRPC's core
                    # (the caller then waited for its deadline); `streaming` aborts instead
                    raise InvalidArgument(f"{item.format(index=index)}: {request.message}")
                yield request
                index += 1

        if not handler.request_streaming and not handler.response_streaming:

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                request = await checked(request, context)
                peer = await admit(context)
                try:
                    return await inner(request, context)
                finally:
                    leave(peer)

            return _method_handler(handler, unary, deserializer)

        if not handler.request_streaming:

            async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                request = await checked(request, context)
                peer = await admit(context)
                try:
                    async for response in _responses(inner(request, context)):
                        yield response
                finally:
                    leave(peer)

            return _method_handler(handler, unary_stream, deserializer)

        async def streaming_handler(
            requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
        ) -> Any:
            peer = await admit(context)
            held = True  # the slot, given back before a status is sent (a caller that reads
            # the gauge once it has its status sees the slot free)

            def give_back() -> None:
                nonlocal held
                if held:
                    held = False
                    leave(peer)

            watch = None
            if counted and self.stream_idle_timeout_s > 0:
                task = asyncio.current_task()
                assert task is not None
                watch = IdleWatch(self.stream_idle_timeout_s, task)
            try:
                if handler.response_streaming:
                    responses = inner(checked_stream(requests, watch), context)
                    async for response in _responses(responses):
                        if watch is not None:
                            watch.answer(response)
                        yield response
                else:  # no such method today; kept for completeness of the handler kinds
                    yield await inner(checked_stream(requests, watch), context)
            except BertServeError as error:  # a bad message ends the stream with its status
                code, message = status_of(error)
                metrics.REQUESTS.labels(short, code.name).inc()
                give_back()
                await context.abort(code, message)
            except asyncio.CancelledError:
                if watch is None or not watch.fired:
                    raise  # the caller cancelled, or the server is stopping
                asyncio.current_task().uncancel()  # type: ignore[union-attr]
                metrics.REQUESTS.labels(short, "DEADLINE_EXCEEDED").inc()
                give_back()
                await context.abort(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    self.idle_message(),
                    trailing_metadata=((REASON_KEY, "IDLE"),),
                )
            finally:
                if watch is not None:
                    watch.stop()
                give_back()

        return _method_handler(handler, streaming_handler, deserializer)

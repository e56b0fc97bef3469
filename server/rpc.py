"""What both gRPC front doors share: the call decorator (drain check, metrics, one log line,
domain errors to their status and anything else to a logged INTERNAL)."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from bertserve.server import metrics
from bertserve.server.errors import REASON_KEY, BertServeError, Field, reason_of, status_of

log = logging.getLogger("bertserve.server.servicer")
Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


def log_call(method: str, code: grpc.StatusCode, seconds: float, request_id: str) -> None:
    """One structured line per call: DEBUG when it succeeded, INFO when it failed."""
    level = logging.DEBUG if code == grpc.StatusCode.OK else logging.INFO
    if log.isEnabledFor(level):
        fields = {"method": method, "code": code.name, "ms": round(seconds * 1000, 3)}
        log.log(level, "call", extra={**fields, "request_id": request_id})


# (method, code) -> its counter and histogram: a label lookup costs ~8 us a call, the cached
# children ~2 us (measured with bench/per_call's micro-benchmark in the commit message)
_SERIES: dict[tuple[str, grpc.StatusCode], tuple[Any, Any]] = {}


def record(method: str, code: grpc.StatusCode, seconds: float, request_id: str) -> None:
    """Count and time one call and log it."""
    series = _SERIES.get((method, code))
    if series is None:
        series = _SERIES[(method, code)] = (
            metrics.REQUESTS.labels(method, code.name),
            metrics.REQUEST_SECONDS.labels(method),
        )
    series[0].inc()
    series[1].observe(seconds)
    log_call(method, code, seconds, request_id)


def code_of(error: BaseException | None, method: str, request_id: str) -> grpc.StatusCode:
    """The status of a finished stream item; an unexpected error is logged with its trace."""
    if error is None:
        return grpc.StatusCode.OK
    if not isinstance(error, BertServeError):
        log.error("%s request %r failed", method, request_id, exc_info=error)
    return status_of(error)[0]


async def refuse_if_draining(engine: Any, context: grpc.aio.ServicerContext) -> None:
    """A stream opened while the server drains ends at once with UNAVAILABLE."""
    if engine.draining:
        await context.abort(
            grpc.StatusCode.UNAVAILABLE,
            "the server is shutting down; retry on another replica",
            trailing_metadata=((REASON_KEY, "DRAINING"),),
        )


def unary(method: str) -> Callable[[Handler], Handler]:
    """Count and time the RPC; refuse it while draining; turn domain errors into their status
    (fields named by the servicer's ``field_name``) and anything else into a logged INTERNAL
    (the last-resort handler)."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            request_id = getattr(request, "id", "")
            try:
                self.engine.check_open()
                answer = await handler(self, request, context)
            except asyncio.CancelledError:
                record(method, grpc.StatusCode.CANCELLED, time.perf_counter() - started, "")
                raise
            except Exception as error:
                name: Callable[[Field], str] = self.field_name
                code, message = status_of(error, name)
                if not isinstance(error, BertServeError):
                    log.exception("%s failed", method)
                # abort sends the status at once: count the call first, so a caller that
                # reads the metrics after its error sees it
                record(method, code, time.perf_counter() - started, request_id[:64])
                reason = reason_of(error)
                trailer = ((REASON_KEY, reason),) if reason else ()
                await context.abort(code, message, trailing_metadata=trailer)
            record(method, grpc.StatusCode.OK, time.perf_counter() - started, request_id)
            return answer

        return wrapper  # type: ignore[return-value]

    return decorate

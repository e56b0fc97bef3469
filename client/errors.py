"""One exception for every failure the client reports, keeping the gRPC status code."""

from __future__ import annotations

import grpc


class BertserveError(Exception):
    """A call to a bertserve server failed.

    ``code`` is the ``grpc.StatusCode`` (INVALID_ARGUMENT, NOT_FOUND, UNAVAILABLE,
    RESOURCE_EXHAUSTED, ...), ``details`` the server's message, ``request_id``
    the EmbedStream request it belongs to (empty for unary calls), ``reason`` the
    server's machine-readable cause where a code has several: RESOURCE_EXHAUSTED is
    "OVERLOADED" (retry later) or "ANSWER_TOO_LARGE" (ask for less).
    """

    def __init__(
        self, code: grpc.StatusCode, details: str, request_id: str = "", reason: str = ""
    ) -> None:
        self.code = code
        self.details = details
        self.request_id = request_id
        self.reason = reason
        where = f" (request {request_id!r})" if request_id else ""
        super().__init__(f"{code.name}: {details}{where}")

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> BertserveError:
        """The exception for a failed call (a ``grpc.RpcError`` or ``grpc.aio.AioRpcError``)."""
        code = error.code() if hasattr(error, "code") else None
        details = error.details() if hasattr(error, "details") else None
        if not isinstance(code, grpc.StatusCode):
            code = grpc.StatusCode.UNKNOWN
        return cls(code, details or str(error) or code.name, reason=_trailer_reason(error))

    @classmethod
    def from_status(
        cls, code: int, message: str, request_id: str = "", reason: str = ""
    ) -> BertserveError:
        """The exception for an in-band ``Error`` (an integer status code) on EmbedStream."""
        return cls(status_code(code), message, request_id, reason)

    @property
    def retryable(self) -> bool:
        """Whether sending the same request again later may succeed: UNAVAILABLE (a replica
        going away) or RESOURCE_EXHAUSTED from overload (not from an answer too large)."""
        if self.code == grpc.StatusCode.UNAVAILABLE:
            return True
        return self.code == grpc.StatusCode.RESOURCE_EXHAUSTED and self.reason not in (
            ANSWER_TOO_LARGE,
            REQUEST_TOO_LARGE,
        )


ANSWER_TOO_LARGE = "ANSWER_TOO_LARGE"
REQUEST_TOO_LARGE = "REQUEST_TOO_LARGE"
REASON_KEY = "bertserve-reason"


def _trailer_reason(error: grpc.RpcError) -> str:
    try:
        trailers = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    except Exception:  # a locally made RpcError may have none
        return ""
    return next((str(v) for k, v in trailers or () if k == REASON_KEY), "")


def status_code(value: int) -> grpc.StatusCode:
    """The ``grpc.StatusCode`` of an integer code; UNKNOWN for a number gRPC does not define."""
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code
    return grpc.StatusCode.UNKNOWN

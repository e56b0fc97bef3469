"""Domain errors of the server and the one table that maps them to gRPC status codes."""

from __future__ import annotations

import grpc


class BertServeError(Exception):
    """Base of every error the server answers with a status code other than INTERNAL."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidArgument(BertServeError):
    """The request is malformed: the message names the field, the value and what is allowed."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class ModelNotFound(BertServeError):
    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(BertServeError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Overloaded(BertServeError):
    """The bounded queue is full, or an answer is too big for one message."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(BertServeError):
    """The server is draining or not ready."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(BertServeError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(BertServeError):
    code = grpc.StatusCode.CANCELLED


class DeviceError(Exception):
    """The requested device cannot be used (no onnxruntime-gpu, no GPU): a startup error."""


def status_of(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message to answer for ``error``; unknown errors are INTERNAL."""
    if isinstance(error, BertServeError):
        return error.code, str(error)
    return grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}: {error}"

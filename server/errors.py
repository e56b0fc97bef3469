"""Domain errors of the server and the one table that maps them to gRPC status codes."""

from __future__ import annotations

import grpc


class BertServeError(Exception):
    """Base of every error the server answers with a status code other than INTERNAL."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    # Machine-readable cause for codes with more than one (RESOURCE_EXHAUSTED): sent as the
    # trailer ``bertserve-reason`` and in EmbedStream's in-band Error.reason.
    reason: str = ""


class InvalidArgument(BertServeError):
    """The request is malformed: the message names the field, the value and what is allowed."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class ModelNotFound(BertServeError):
    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(BertServeError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Overloaded(BertServeError):
    """The bounded queue or the RPC limit is full: worth retrying later, with backoff."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "OVERLOADED"


class AnswerTooLarge(Overloaded):
    """The answer would exceed a size limit: retrying the same request cannot help."""

    reason = "ANSWER_TOO_LARGE"


class Unavailable(BertServeError):
    """The server is draining or not ready."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "DRAINING"


class DeadlineExceeded(BertServeError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(BertServeError):
    code = grpc.StatusCode.CANCELLED


class DeviceError(Exception):
    """The requested device cannot be used (no onnxruntime-gpu, no GPU): a startup error."""


REASON_KEY = "bertserve-reason"


def reason_of(error: BaseException) -> str:
    return error.reason if isinstance(error, BertServeError) else ""


def status_of(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message to answer for ``error``; unknown errors are INTERNAL."""
    if isinstance(error, BertServeError):
        return error.code, str(error)
    return grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}: {error}"

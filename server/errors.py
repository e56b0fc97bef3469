"""Domain errors of the server and the one table that maps them to gRPC status codes.

An error may name the request field it is about as a structured path (``("texts", 2)``,
``("sequences", 0, "input_ids", 3)``, ``("layers",)``); each front door's codec renders that
path in its own protocol's words. ``str(error)`` renders it in bertserve.v1's words.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the core runs without gRPC; only status_of needs it
    import grpc

Field = tuple[str | int, ...]


def v1_field(field: Field) -> str:
    """A path in bertserve.v1's names: ``sequences[0].input_ids[3]``."""
    text = ""
    for part in field:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


class BertServeError(Exception):
    """Base of every error the server answers with a status code other than INTERNAL."""

    # Machine-readable cause for codes with more than one (RESOURCE_EXHAUSTED): sent as the
    # trailer ``bertserve-reason`` and in EmbedStream's in-band Error.reason.
    reason: str = ""

    def __init__(self, message: str, field: Field = ()) -> None:
        super().__init__(message)
        self.detail = message
        self.field = field

    def render(self, name: Callable[[Field], str] = v1_field) -> str:
        """The message with the field named by ``name`` (``field: detail``, ``field=value``)."""
        if not self.field:
            return self.detail
        joint = "" if self.detail.startswith("=") else ": "
        return f"{name(self.field)}{joint}{self.detail}"

    def __str__(self) -> str:
        return self.render()


class InvalidArgument(BertServeError):
    """The request is malformed: the message names the field, the value and what is allowed."""


class ModelNotFound(BertServeError):
    pass


class FailedPrecondition(BertServeError):
    pass


class Overloaded(BertServeError):
    """The bounded queue or the RPC limit is full: worth retrying later, with backoff."""

    reason = "OVERLOADED"


class AnswerTooLarge(Overloaded):
    """The answer would exceed a size limit: retrying the same request cannot help."""

    reason = "ANSWER_TOO_LARGE"


class Unavailable(BertServeError):
    """The server is draining or not ready."""

    reason = "DRAINING"


class DeadlineExceeded(BertServeError):
    pass


class DeviceError(Exception):
    """The requested device cannot be used (no onnxruntime-gpu, no GPU): a startup error."""


# The one table: domain error -> gRPC status code name (the most specific class wins).
CODES: dict[type[BertServeError], str] = {
    InvalidArgument: "INVALID_ARGUMENT",
    ModelNotFound: "NOT_FOUND",
    FailedPrecondition: "FAILED_PRECONDITION",
    Overloaded: "RESOURCE_EXHAUSTED",
    Unavailable: "UNAVAILABLE",
    DeadlineExceeded: "DEADLINE_EXCEEDED",
}

REASON_KEY = "bertserve-reason"


def reason_of(error: BaseException) -> str:
    return error.reason if isinstance(error, BertServeError) else ""


def status_of(
    error: BaseException, name: Callable[[Field], str] = v1_field
) -> tuple[grpc.StatusCode, str]:
    """The status code and message to answer for ``error`` (fields named by ``name``);
    unknown errors are INTERNAL."""
    import grpc

    if isinstance(error, BertServeError):
        for kind in type(error).__mro__:
            if kind in CODES:
                return grpc.StatusCode[CODES[kind]], error.render(name)
    return grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}: {error}"

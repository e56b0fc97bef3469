"""Request bytes that do not decode as the method's message: a stand-in the guard
(server/limits.py) answers INVALID_ARGUMENT for, worded in the protocol the caller used."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Each front door's words: what one message of a stream is called, and where its messages are
# defined (a caller is told in the protocol it used).
PROTOCOLS = {
    "/bertserve.v1.": ("message {index} of the stream", "bertserve.v1's bertserve.proto"),
    "/inference.": (
        "request {index} of the stream",
        "the Open Inference Protocol's grpc_service.proto",
    ),
}


def protocol_of(method: str) -> tuple[str, str]:
    """(a stream item's name with ``{index}``, where the messages are defined) for ``method``."""
    for prefix, words in PROTOCOLS.items():
        if method.startswith(prefix):
            return words
    return "message {index} of the stream", "the service's .proto"


def _message_type(deserializer: Callable[[bytes], Any] | None) -> str:
    """The request message's protobuf name (``inference.ModelInferRequest``), from its
    generated ``FromString``; "its request message" when it cannot be told."""
    descriptor = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    return getattr(descriptor, "full_name", "") or "its request message"


class MalformedRequest:
    """Stands in for a request whose bytes did not decode, so the handler can answer
    INVALID_ARGUMENT (a deserializer that raises makes gRPC answer UNKNOWN)."""

    def __init__(self, method: str, message_type: str, size: int, error: BaseException) -> None:
        where = protocol_of(method)[1]
        self.message = (
            f"the {size} bytes sent to {method} do not decode as {message_type} ({error}); "
            f"allowed: {message_type} serialized with protobuf (see {where})"
        )


def tolerant(method: str, deserializer: Callable[[bytes], Any] | None) -> Callable:
    """``deserializer`` that returns a MalformedRequest instead of raising."""
    message_type = _message_type(deserializer)

    def deserialize(data: bytes) -> Any:
        if deserializer is None:
            return data
        try:
            return deserializer(data)
        except Exception as error:  # DecodeError, UnicodeDecodeError, ...
            return MalformedRequest(method, message_type, len(data), error)

    return deserialize

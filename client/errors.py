"""One exception for every failure the client reports, keeping the gRPC status code; a
connection, TLS, token or deadline failure also says what to check and which argument fixes
it (``advice``), in the Python client's words (``PYTHON``) or the CLI's (``CLI``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

if TYPE_CHECKING:
    from .channel import Connection


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
        # set by advise(): what went wrong in the client's terms ("" if nothing is known)
        self.problem = ""
        self.advice = ""
        self.connection: Connection | None = None
        super().__init__(self._message())

    def _message(self) -> str:
        where = f" (request {self.request_id!r})" if self.request_id else ""
        if self.advice:
            return f"{self.code.name}: {self.advice} (details: {self.details}){where}"
        return f"{self.code.name}: {self.details}{where}"

    def advise(self, connection: Connection) -> BertserveError:
        """Add what to check and which argument fixes it, when the failure is one of the
        connection's (no server, TLS, token, deadline); returns self. ``details`` stays the
        server's or gRPC's own message."""
        if self.connection is None:
            self.connection = connection
            self.problem = diagnose(self.code, self.details, self.reason, connection)
            self.advice = advice(self.problem, connection, PYTHON)
            self.args = (self._message(),)
        return self

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


# -- what a connection failure means, and what fixes it --------------------------------------


@dataclass(frozen=True)
class Words:
    """How one kind of caller names what fixes a failure: Python arguments or CLI flags."""

    target: str
    tls: str
    no_tls: str
    client_cert: str
    token: str
    timeout: str
    # the CLI's calls all use its --timeout; a Python call may pass its own
    names_timeout: bool = False


PYTHON = Words(
    target="target='HOST:PORT' (or set $BERTSERVE_TARGET)",
    tls="tls='CA.pem' (the CA that signed the server's certificate; tls=True: the system's roots)",
    no_tls="leave tls unset (plaintext)",
    client_cert="pass tls=grpc.ssl_channel_credentials(root_certificates=..., private_key=..., "
    "certificate_chain=...) with the client's key and certificate",
    token="token='...'",
    timeout="a longer timeout= (seconds)",
)
CLI = Words(
    target="--target HOST:PORT (or set $BERTSERVE_TARGET)",
    tls="--tls CA.pem (the CA that signed the server's certificate; --tls system: the system's "
    "roots)",
    no_tls="drop --tls",
    client_cert="the CLI sends no client certificate: use the Python client with "
    "tls=grpc.ssl_channel_credentials(root_certificates=..., private_key=..., "
    "certificate_chain=...)",
    token="--token TOKEN (or set $BERTSERVE_TOKEN)",
    timeout="a longer --timeout SECONDS",
    names_timeout=True,
)

# gRPC's own words for each failure (its messages as of grpcio 1.6x-1.8x; BoringSSL's names)
_REFUSED = ("Connection refused", "Failed to connect to remote host", "No route to host")


def diagnose(code: grpc.StatusCode, details: str, reason: str, connection: Connection) -> str:
    """The problem a failure shows, as a key of ``advice``; "" when it is none of the
    connection's (the server's own errors say what was wrong themselves)."""
    text = details or ""
    if code == grpc.StatusCode.UNAVAILABLE:
        if "WRONG_VERSION_NUMBER" in text and connection.tls:
            return "not_tls"
        if "CERTIFICATE_VERIFY_FAILED" in text:
            return "untrusted"
        if "Hostname Verification" in text or "Peer name" in text:
            return "wrong_name"
        if "handshake" in text.lower():
            return "tls_failed"
        if "Socket closed" in text and "last error" in text:  # closed before any answer
            return "client_cert" if connection.tls else "wants_tls"
        if "resolving" in text or "DNS resolution failed" in text:
            return "unresolved"
        if any(words in text for words in _REFUSED):
            return "no_server"
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return "token_refused" if connection.token else "token_missing"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED and reason != "IDLE":
        return "deadline"
    return ""


def advice(problem: str, connection: Connection, words: Words) -> str:
    """What to check and which argument (``words``) fixes ``problem``; "" for none."""
    at = connection.target
    if problem == "deadline":
        within = "the timeout"
        if words.names_timeout and connection.timeout:
            within = f"{connection.timeout:g} s"
        return f"no answer from {at} within {within}: pass {words.timeout}, or send less per call"
    texts = {
        "no_server": f"no bertserve server answered at {at}: is one running? start one with "
        f"`bertserve serve --repo models` (or `./dev serve`), or pass {words.target}",
        "unresolved": f"cannot resolve the host name of {at}: check it, or pass {words.target}",
        "wants_tls": f"the server at {at} closed the connection before answering: it probably "
        f"serves TLS (started with --tls-cert); pass {words.tls}",
        "not_tls": f"the server at {at} speaks plaintext, not TLS: {words.no_tls}",
        "untrusted": f"the TLS certificate of the server at {at} is not signed by a CA this "
        f"client trusts: pass {words.tls}",
        "wrong_name": f"the TLS certificate of the server at {at} does not name that host: "
        "connect by a host name or address its certificate lists",
        "tls_failed": f"the TLS handshake with {at} failed: check {words.tls}",
        "client_cert": f"the server at {at} closed the TLS connection before answering: it "
        "probably requires a client certificate (mutual TLS, --tls-client-ca); "
        + words.client_cert,
        "token_missing": f"the server at {at} requires a bearer token: pass {words.token}",
        "token_refused": f"the server at {at} refused this bearer token: check {words.token} "
        "against the server's --auth-token-file",
    }
    return texts.get(problem, "")

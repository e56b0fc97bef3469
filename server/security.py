"""TLS (and mutual TLS) credentials and bearer-token authentication for the server.

Tokens come from a file, one a line (blank lines and ``#`` comments skipped), and are read
again on SIGHUP. A call must carry ``authorization: Bearer <token>`` matching one of them,
compared in constant time; ``grpc.health.v1`` and the v2 ServerLive/ServerReady stay open so
probes need no secret. Tokens are never logged and never reach a metric label.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import grpc.aio
from bertserve.server import metrics
from bertserve.server.limits import refusal

log = logging.getLogger(__name__)

# probes need no secret: grpc.health.v1 and the v2 protocol's liveness and readiness
OPEN_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/inference.GRPCInferenceService/ServerLive",
    "/inference.GRPCInferenceService/ServerReady",
)


def server_credentials(
    cert: Path | None, key: Path | None, client_ca: Path | None
) -> grpc.ServerCredentials | None:
    """TLS credentials from PEM files (None: plaintext); a client CA turns on mutual TLS."""
    if cert is None or key is None:
        return None
    return grpc.ssl_server_credentials(
        [(Path(key).read_bytes(), Path(cert).read_bytes())],
        root_certificates=Path(client_ca).read_bytes() if client_ca else None,
        require_client_auth=client_ca is not None,
    )


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address to listen on) is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_tokens(path: Path) -> tuple[bytes, ...]:
    """The tokens of a token file; ValueError when it holds none."""
    lines = (line.strip() for line in Path(path).read_text().splitlines())
    tokens = tuple(line.encode() for line in lines if line and not line.startswith("#"))
    if not tokens:
        raise ValueError(f"auth token file {path}: holds no token (one token a line)")
    return tokens


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """UNAUTHENTICATED unless ``authorization: Bearer <token>`` names a known token."""

    def __init__(self, token_file: Path) -> None:
        self.token_file = Path(token_file)
        self._tokens = read_tokens(self.token_file)

    def reload(self) -> None:
        """Read the token file again (on SIGHUP); a broken file keeps the old tokens."""
        try:
            self._tokens = read_tokens(self.token_file)
        except (OSError, ValueError) as error:
            log.error("auth tokens not reloaded, keeping the old ones: %s", error)
            return
        log.info("auth tokens reloaded", extra={"tokens": len(self._tokens)})

    def allows(self, presented: bytes) -> bool:
        # every token compared, each in constant time: the answer's timing tells nothing
        matched = False
        for token in self._tokens:
            matched |= hmac.compare_digest(presented, token)
        return matched

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None or details.method.startswith(OPEN_PREFIXES):
            return handler
        header = next(
            (value for key, value in details.invocation_metadata or () if key == "authorization"),
            None,
        )
        if isinstance(header, str):
            header = header.encode()
        scheme, _, presented = (header or b"").partition(b" ")
        if header is None:
            problem = "no authorization metadata"
        elif scheme.lower() != b"bearer" or not presented:
            problem = "the authorization metadata is not 'Bearer <token>'"
        elif not self.allows(presented.strip()):
            problem = "the bearer token is not valid"
        else:
            return handler
        metrics.REQUESTS.labels(details.method.rsplit("/", 1)[-1], "UNAUTHENTICATED").inc()
        return refusal(
            handler,
            grpc.StatusCode.UNAUTHENTICATED,
            f"{problem}; send 'authorization: Bearer <token>' with a token this server "
            "accepts (bertserve clients: token=... or --token)",
        )

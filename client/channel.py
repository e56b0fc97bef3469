"""Channels: target forms, round-robin with retries, TLS and bearer tokens."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

DEFAULT_TARGET = "127.0.0.1:50051"

# TLS: True (system roots), a PEM root-certificate file, or ready credentials.
TLS = bool | str | Path | grpc.ChannelCredentials | None

# Every method is idempotent, so a call that failed with UNAVAILABLE (a replica
# went away before answering) is sent again, to the next replica in the ring.
SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [
        {
            "name": [{"service": "bertserve.v1.BertService"}, {"service": "grpc.health.v1.Health"}],
            "retryPolicy": {
                "maxAttempts": 5,
                "initialBackoff": "0.05s",
                "maxBackoff": "2s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
}

# Answers are chunked under 4 MB by the server; the margin covers message framing.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def default_target() -> str:
    """``$BERTSERVE_TARGET`` or 127.0.0.1:50051."""
    return os.environ.get("BERTSERVE_TARGET") or DEFAULT_TARGET


def _split_host_port(address: str) -> tuple[str, str]:
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        return host, rest.lstrip(":")
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"target {address!r}: expected host:port")
    return host, port


def resolve_target(target: str) -> str:
    """The gRPC target for ``target``.

    ``host:port`` and URIs (``dns:///name:port``, ``ipv4:...``, ``unix:...``) pass as
    they are; a comma-separated list ``host1:port,host2:port`` becomes a static
    ``ipv4:``/``ipv6:`` address list (host names resolved once, here) that the
    round-robin policy balances.
    """
    target = target.strip()
    if not target:
        raise ValueError("empty target: use host:port, host1:port,host2:port or dns:///name:port")
    if "," not in target or ":///" in target or target.startswith(("ipv4:", "ipv6:", "unix:")):
        return target
    v4: list[str] = []
    v6: list[str] = []
    for address in (a.strip() for a in target.split(",") if a.strip()):
        host, port = _split_host_port(address)
        try:
            ip = ipaddress.ip_address(host)
            ips = [ip]
        except ValueError:
            try:
                infos = socket.getaddrinfo(host, int(port), proto=socket.IPPROTO_TCP)
            except socket.gaierror as exc:
                raise ValueError(f"target {address!r}: cannot resolve {host!r}: {exc}") from None
            ips = [ipaddress.ip_address(info[4][0]) for info in infos]
        for ip in dict.fromkeys(ips):
            (v4 if ip.version == 4 else v6).append(
                f"{ip}:{port}" if ip.version == 4 else f"[{ip}]:{port}"
            )
    # A gRPC target names one address family; IPv4 wins when a list mixes both.
    return "ipv4:" + ",".join(v4) if v4 else "ipv6:" + ",".join(v6)


def credentials(tls: TLS) -> grpc.ChannelCredentials | None:
    """Channel credentials for ``tls`` (None: plaintext)."""
    if tls is None or tls is False:
        return None
    if tls is True:
        return grpc.ssl_channel_credentials()
    if isinstance(tls, (str, Path)):
        return grpc.ssl_channel_credentials(root_certificates=Path(tls).read_bytes())
    if isinstance(tls, grpc.ChannelCredentials):
        return tls
    raise TypeError(f"tls must be True, a PEM file path or grpc.ChannelCredentials, not {tls!r}")


def channel_options(target: str, extra: Sequence[tuple[str, object]] = ()) -> list:
    """Options: service config (round-robin, retries), message sizes, keepalive."""
    options: list[tuple[str, object]] = [
        ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
        ("grpc.enable_retries", 1),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        # Requests are kept for a retry until answered; keep room for many in flight.
        ("grpc.per_rpc_retry_buffer_size", 4 * 1024 * 1024),
        ("grpc.retry_buffer_size", 256 * 1024 * 1024),
        ("grpc.keepalive_time_ms", 30_000),
    ]
    # The caller's options win over these defaults.
    chosen = dict(options)
    chosen.update(extra)
    return list(chosen.items())


def open_channel(
    api: Any, target: str, tls: TLS, options: Sequence[tuple[str, object]] = ()
) -> Any:
    """A channel to ``target`` from ``api`` (``grpc`` or ``grpc.aio``): resolved, balanced
    round-robin, retrying UNAVAILABLE, secure when ``tls`` says so."""
    resolved = resolve_target(target)
    creds = credentials(tls)
    opts = channel_options(resolved, options)
    if creds is None:
        return api.insecure_channel(resolved, opts)
    return api.secure_channel(resolved, creds, opts)


@dataclass(frozen=True)
class Connection:
    """How a client reaches its server, as its error messages describe it: the target as
    given, whether it speaks TLS and sends a bearer token, its timeout per call (seconds)."""

    target: str
    tls: bool = False
    token: bool = False
    timeout: float | None = None

    @classmethod
    def of(cls, target: str, tls: TLS, token: str | None, timeout: float | None) -> Connection:
        return cls(target, tls is not None and tls is not False, bool(token), timeout)


def auth_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """The bearer-token metadata sent with every call."""
    return (("authorization", f"Bearer {token}"),) if token else ()

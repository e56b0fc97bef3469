"""Build and run the gRPC server: BertService, the Open Inference Protocol, health, reflection,
metrics, graceful shutdown."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path

import grpc
from bertserve.inference import grpc_service_pb2_grpc
from bertserve.server import metrics
from bertserve.server.config import ServerConfig
from bertserve.server.core.engine import Engine
from bertserve.server.limits import GuardInterceptor
from bertserve.server.models import ModelRegistry
from bertserve.server.oip.servicer import SERVICE_NAME as INFERENCE_SERVICE
from bertserve.server.oip.servicer import InferenceServicer
from bertserve.server.runtime import check_device
from bertserve.server.security import TokenAuthInterceptor, is_loopback, server_credentials
from bertserve.server.v1.servicer import BertServicer
from bertserve.v1 import bertserve_pb2, bertserve_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

log = logging.getLogger("bertserve.server")

SERVICE_NAME = bertserve_pb2.DESCRIPTOR.services_by_name["BertService"].full_name
HEALTH_SERVICES = ("", SERVICE_NAME, INFERENCE_SERVICE)


def server_options(config: ServerConfig) -> list[tuple[str, int]]:
    """gRPC channel arguments: message sizes, keepalive policy, connection age."""
    ms = lambda seconds: int(seconds * 1000)  # noqa: E731
    options = [
        # no SO_REUSEPORT: a second server on a busy port must fail, not share it silently
        ("grpc.so_reuseport", 0),
        ("grpc.max_receive_message_length", config.max_request_bytes),
        ("grpc.max_send_message_length", config.max_request_bytes),
        # Accept the client's keepalive pings (every 30 s), also on a connection whose only
        # stream is idle: gRPC's default (5 min) answers them with GOAWAY "too_many_pings".
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", ms(config.keepalive_min_ping_interval_s)),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.keepalive_time_ms", ms(config.keepalive_time_s)),
        ("grpc.keepalive_timeout_ms", ms(config.keepalive_timeout_s)),
    ]
    if config.max_connection_age_s > 0:
        options += [
            ("grpc.max_connection_age_ms", ms(config.max_connection_age_s)),
            ("grpc.max_connection_age_grace_ms", ms(config.max_connection_age_grace_s)),
        ]
    return options


class BertServer:
    """A bound grpc.aio server with its models, health and servicer.

    ``start()`` answers health NOT_SERVING at once; ``load()`` loads and warms the models and
    turns health SERVING; ``stop(grace)`` drains.
    """

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        check_device(config.device)
        self.registry = ModelRegistry(config)
        self.engine = Engine(self.registry, config.max_request_sequences)
        self.servicer = BertServicer(self.engine, config)
        # the Open Inference Protocol: a second front door onto the same core
        self.inference = InferenceServicer(self.engine, config)
        self.health = HealthServicer()
        self.auth = TokenAuthInterceptor(config.auth_token_file) if config.auth_token_file else None
        self.guard = GuardInterceptor(
            config.max_concurrent_rpcs,
            max_rpcs_per_peer=config.peer_limit,
            stream_limit=config.stream_limit,
            stream_idle_timeout_s=config.stream_idle_timeout_s,
        )
        interceptors = [self.auth, self.guard] if self.auth else [self.guard]
        self.server = grpc.aio.server(interceptors=interceptors, options=server_options(config))
        bertserve_pb2_grpc.add_BertServiceServicer_to_server(self.servicer, self.server)
        grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            self.inference, self.server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (
                SERVICE_NAME,
                INFERENCE_SERVICE,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            self.server,
        )
        address = f"{config.host}:{config.port}"
        credentials = server_credentials(config.tls_cert, config.tls_key, config.tls_client_ca)
        try:
            if credentials is None:
                self.port = self.server.add_insecure_port(address)
            else:
                self.port = self.server.add_secure_port(address, credentials)
        except RuntimeError as error:
            raise OSError(f"cannot listen on {address} (in use?): {error}") from None
        if credentials is None and not is_loopback(config.host):
            log.warning(
                "listening on %s without TLS: anyone on the network can read the traffic; "
                "pass --tls-cert and --tls-key (and --auth-token-file) to protect it",
                address,
            )

    async def start(self) -> None:
        for service in HEALTH_SERVICES:
            await self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.start()

    async def load(self) -> None:
        await asyncio.to_thread(self.registry.load_defaults)
        self.engine.ready = True
        for service in HEALTH_SERVICES:
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float | None = None) -> None:
        """Health NOT_SERVING, refuse new calls, let in-flight ones finish within ``grace``."""
        grace = self.config.grace_period_s if grace is None else grace
        await self.health.enter_graceful_shutdown()
        self.engine.draining = True
        # While in-flight calls finish, new ones reach the handlers and get UNAVAILABLE with a
        # message (retry on another replica); once grpc's own stop begins, calls that arrive
        # are cancelled without one, so it begins only when the work is done or grace is up.
        loop = asyncio.get_running_loop()
        end = loop.time() + grace
        while self.guard.in_flight and loop.time() < end:
            await asyncio.sleep(0.01)
        await self.server.stop(max(0.0, end - loop.time()))
        await self.registry.close(timeout=1.0)


async def create_server(config: ServerConfig) -> tuple[BertServer, int]:
    """A started server with its models loaded and health SERVING, and its bound port."""
    server = BertServer(config)
    await server.start()
    await server.load()
    return server, server.port


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra`` fields."""

    STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
        "message",
        "asctime",
    }

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        data.update({k: v for k, v in record.__dict__.items() if k not in self.STANDARD})
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def setup_logging(config: ServerConfig) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if config.log_json
        else logging.Formatter("%(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.log_level.upper())


def _write_port_file(path: Path, port: int) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(f"{port}\n")
    temporary.replace(path)


async def run(config: ServerConfig) -> None:
    """Serve until SIGTERM or SIGINT, then drain within the grace period."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = BertServer(config)
    if server.auth is not None:
        loop.add_signal_handler(signal.SIGHUP, server.auth.reload)
    metrics.watch_event_loop(loop)
    await server.start()
    log.info("listening, loading models", extra={"host": config.host, "port": server.port})
    metrics_port = http = None
    if config.metrics_port is not None:
        http = metrics.serve_metrics(
            config.metrics_host,
            config.metrics_port,
            tls_cert=config.tls_cert,
            tls_key=config.tls_key,
            tls_client_ca=config.tls_client_ca,
            allows=server.auth.allows if server.auth else None,  # reloaded with it on SIGHUP
        )
        metrics_port = http.server_port
        if config.tls_cert is None and not is_loopback(config.metrics_host):
            log.warning(
                "metrics on %s:%s without TLS: anyone on the network can read them",
                config.metrics_host,
                metrics_port,
            )
    await server.load()
    if config.port_file:
        _write_port_file(config.port_file, server.port)
    log.info(
        "serving",
        extra={
            "target": f"{config.host}:{server.port}",
            "metrics": f"{config.metrics_host}:{metrics_port}" if http else None,
            "models": {f"{m}": v for m, v in server.registry.default_variants.items()},
            "default_model": server.registry.default_model,  # None: requests must name one
            "device": config.device,
        },
    )
    await stop.wait()
    log.info("draining", extra={"grace_period_s": config.grace_period_s})
    await server.stop()
    if http is not None:
        await asyncio.to_thread(http.shutdown)
    log.info("stopped")


def serve(config: ServerConfig) -> None:
    """Run the server in this process (blocking)."""
    setup_logging(config)
    asyncio.run(run(config))

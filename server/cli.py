"""``bertserve serve``: the command-line front of the server (imports nothing heavy at import)."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``serve`` sub-command."""
    parser = subparsers.add_parser(
        "serve",
        help="serve a model repository over gRPC",
        description=(
            "Serve every model of a repository over gRPC (bertserve.v1.BertService, health, "
            "reflection). Unset flags fall back to BERTSERVE_* environment variables, then the "
            "--config YAML file, then defaults."
        ),
    )
    parser.add_argument("--repo", help="model repository (env BERTSERVE_REPO)")
    parser.add_argument(
        "--host", help="address to listen on (default 127.0.0.1; env BERTSERVE_HOST)"
    )
    parser.add_argument("--port", type=int, help="gRPC port (default 50051; 0: any free port)")
    parser.add_argument(
        "--metrics-port",
        type=int,
        help="Prometheus /metrics HTTP port (default: off; 0: any free port; -1: off)",
    )
    parser.add_argument(
        "--config", help="YAML file with server settings and per-model batch settings"
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), help="execution device (default cpu)")
    parser.add_argument("--default-model", help="model answered when a request names none")
    parser.add_argument(
        "--variant",
        action="append",
        metavar="MODEL=VARIANT",
        help="a model's default variant, e.g. minilm=int8 (repeatable; default: fp32-opt on "
        "CPU, fp16 on CUDA; int8 only when named here, in variants: or by a request)",
    )
    parser.add_argument(
        "--instances", type=int, help="onnxruntime sessions per model variant (default 1)"
    )
    parser.add_argument(
        "--intra-op-threads", type=int, help="threads per session (default: cores / instances)"
    )
    parser.add_argument(
        "--max-batch-tokens", type=int, help="padded tokens per batch (default 8192)"
    )
    parser.add_argument("--max-batch-size", type=int, help="sequences per batch (default 64)")
    parser.add_argument(
        "--max-queue-delay-ms", type=float, help="longest wait to fill a batch (default 2)"
    )
    parser.add_argument(
        "--max-queue-requests", type=int, help="waiting requests before RESOURCE_EXHAUSTED"
    )
    parser.add_argument(
        "--max-queue-sequences", type=int, help="waiting sequences before RESOURCE_EXHAUSTED"
    )
    parser.add_argument(
        "--max-queue-tokens", type=int, help="waiting tokens before RESOURCE_EXHAUSTED"
    )
    parser.add_argument(
        "--grace-period", type=float, help="seconds to finish in-flight work on SIGTERM"
    )
    security = parser.add_argument_group("security")
    security.add_argument(
        "--tls-cert", help="PEM certificate chain: serve TLS (BERTSERVE_TLS_CERT)"
    )
    security.add_argument("--tls-key", help="PEM private key of --tls-cert (BERTSERVE_TLS_KEY)")
    security.add_argument(
        "--tls-client-ca",
        help="PEM CA: mutual TLS, clients need a certificate it signed (BERTSERVE_TLS_CLIENT_CA)",
    )
    security.add_argument(
        "--auth-token-file",
        help="bearer tokens, one a line, reloaded on SIGHUP (BERTSERVE_AUTH_TOKEN_FILE)",
    )
    limits = parser.add_argument_group("limits")
    limits.add_argument(
        "--max-concurrent-rpcs", type=int, help="calls served at once (default 1024)"
    )
    limits.add_argument(
        "--max-request-bytes", type=int, help="largest request message (default 16 MiB)"
    )
    limits.add_argument(
        "--max-request-sequences", type=int, help="texts or sequences per request (default 65536)"
    )
    limits.add_argument(
        "--max-answer-bytes", type=int, help="largest EmbedStream answer (default 16 MiB)"
    )
    limits.add_argument(
        "--stream-buffer-bytes",
        type=int,
        help="unsent answer bytes one EmbedStream may hold (default 32 MiB)",
    )
    limits.add_argument(
        "--allowed-variants", help="comma-separated variants callers may use (default: all)"
    )
    limits.add_argument(
        "--max-loaded-variants", type=int, help="variants loaded at most (default 4)"
    )
    connections = parser.add_argument_group("connections")
    connections.add_argument(
        "--keepalive-min-ping-interval",
        type=float,
        help="seconds: accept client pings this often (default 10)",
    )
    connections.add_argument(
        "--keepalive-time", type=float, help="seconds between the server's pings (default 60)"
    )
    connections.add_argument(
        "--max-connection-age",
        type=float,
        help="seconds before a connection is asked to go away, to rebalance (default 300; 0: off)",
    )
    connections.add_argument(
        "--max-connection-age-grace",
        type=float,
        help="seconds calls get to finish after that (default 60)",
    )
    parser.add_argument("--port-file", help="write the bound port to this file once serving")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING (default INFO)")
    parser.set_defaults(run=run, extra="server")


def run(args: argparse.Namespace) -> int:
    """Build the config and serve until SIGTERM; returns the exit status."""
    import dataclasses

    from bertserve.server.config import load_config
    from bertserve.server.errors import DeviceError

    flags = {
        "repo": args.repo,
        "host": args.host,
        "port": args.port,
        "metrics_port": args.metrics_port,
        "device": args.device,
        "default_model": args.default_model,
        "variants": args.variant,
        "instances": args.instances,
        "intra_op_threads": args.intra_op_threads,
        "grace_period_s": args.grace_period,
        "port_file": args.port_file,
        "log_level": args.log_level,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
        "tls_client_ca": args.tls_client_ca,
        "auth_token_file": args.auth_token_file,
        "max_concurrent_rpcs": args.max_concurrent_rpcs,
        "max_request_bytes": args.max_request_bytes,
        "max_request_sequences": args.max_request_sequences,
        "max_answer_bytes": args.max_answer_bytes,
        "stream_buffer_bytes": args.stream_buffer_bytes,
        "allowed_variants": args.allowed_variants,
        "max_loaded_variants": args.max_loaded_variants,
        "keepalive_min_ping_interval_s": args.keepalive_min_ping_interval,
        "keepalive_time_s": args.keepalive_time,
        "max_connection_age_s": args.max_connection_age,
        "max_connection_age_grace_s": args.max_connection_age_grace,
    }
    try:
        config = load_config(flags, args.config)
        batch_flags = {
            "max_batch_tokens": args.max_batch_tokens,
            "max_batch_size": args.max_batch_size,
            "max_queue_delay_ms": args.max_queue_delay_ms,
            "max_queue_requests": args.max_queue_requests,
            "max_queue_sequences": args.max_queue_sequences,
            "max_queue_tokens": args.max_queue_tokens,
        }
        batch_flags = {k: v for k, v in batch_flags.items() if v is not None}
        if batch_flags:
            config = dataclasses.replace(
                config,
                batch=dataclasses.replace(config.batch, **batch_flags),
                models={n: dataclasses.replace(s, **batch_flags) for n, s in config.models.items()},
            ).validate()
        from bertserve.server.app import serve

        serve(config)
    except (ValueError, OSError, DeviceError) as error:
        print(f"bertserve serve: {error}", file=sys.stderr)
        return 2
    return 0

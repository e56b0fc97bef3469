"""``bertserve bench --latency``: what one short request costs, side by side in one run.

Three ways answer the same single short texts (real tweets of 8 to 12 tokens), one request
after another: a raw onnxruntime session in this process (tokenize, run, mean-pool), bertserve
over gRPC (a server in its own process, the sync Python client here), and the floor of any
Python gRPC server — a ``grpc.aio`` echo server in its own process answering a message the size
of a sentence vector. Their turns are interleaved in blocks so a busy moment of the machine
falls on all of them. Then closed-loop callers of one short text each (1 … 64, asyncio client)
give the throughput ratio of many callers to one.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ECHO_METHOD = "/bertserve.bench.Echo/Echo"
BLOCKS = 6  # each way's requests are split into this many turns, interleaved with the others


@dataclass
class LatencySettings:
    repo: Path
    target: str
    model: str
    variants: list[str]
    requests: int = 600
    concurrency: tuple[int, ...] = (1, 64)
    sweep_seconds: float = 5.0
    threads: int = 0
    answer_bytes: int = 384 * 4  # the echo's answer: a MiniLM sentence vector


def _identity(data: bytes) -> bytes:
    return data


async def _echo_server(port_file: Path, answer_bytes: int) -> None:
    import grpc

    answer = b"\0" * answer_bytes

    async def echo(request: bytes, context: Any) -> bytes:
        return answer

    handler = grpc.method_handlers_generic_handler(
        "bertserve.bench.Echo",
        {
            "Echo": grpc.unary_unary_rpc_method_handler(
                echo, request_deserializer=_identity, response_serializer=_identity
            )
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    port_file.write_text(str(port))
    await server.wait_for_termination()


@contextmanager
def echo_server(answer_bytes: int) -> Iterator[str]:
    """A ``grpc.aio`` echo server in its own process; yields its target."""
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        code = (
            "import asyncio, sys; from pathlib import Path; from bertserve.bench.latency import "
            f"_echo_server; asyncio.run(_echo_server(Path(sys.argv[1]), {answer_bytes}))"
        )
        process = subprocess.Popen([sys.executable, "-c", code, str(port_file)])
        try:
            deadline = time.monotonic() + 60
            while not (port_file.is_file() and port_file.read_text().strip()):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the echo server did not start")
                time.sleep(0.05)
            yield f"127.0.0.1:{port_file.read_text().strip()}"
        finally:
            process.terminate()
            process.wait(timeout=10)


def _percentiles(seconds: Sequence[float]) -> dict[str, float]:
    import numpy as np

    ms = np.asarray(seconds) * 1000
    return {
        "requests": len(ms),
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def interleaved(
    ways: dict[str, Callable[[str], Any]],
    texts: Sequence[str],
    requests: int,
    on_warm: Callable[[float], None] | None = None,
) -> dict[str, list[float]]:
    """Seconds of each of ``requests`` single calls per way, the ways taking turns.
    ``on_warm(seconds)``: told, once warm, what one turn of every way takes."""
    times: dict[str, list[float]] = {name: [] for name in ways}
    turn = 0.0
    for call in ways.values():  # warm: first calls load and allocate
        warm = []
        for text in texts[:20]:
            started = time.perf_counter()
            call(text)
            warm.append(time.perf_counter() - started)
        turn += sorted(warm[5:] or warm)[len(warm[5:] or warm) // 2]
    if on_warm:
        on_warm(turn)
    per_block = max(1, requests // BLOCKS)
    done = 0
    while done < requests:
        take = min(per_block, requests - done)
        for name, call in ways.items():
            for i in range(done, done + take):
                started = time.perf_counter()
                call(texts[i % len(texts)])
                times[name].append(time.perf_counter() - started)
        done += take
    return times


def short_texts(model_folder: Path, count: int = 1024) -> list[str]:
    """Real tweets of the bench corpus with 8 to 12 tokens."""
    from tokenizers import Tokenizer

    from .corpus import corpus

    texts = corpus(count)
    tokenizer = Tokenizer.from_file(str(model_folder / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    lengths = [len(e.ids) for e in tokenizer.encode_batch(texts)]
    return [t for t, n in zip(texts, lengths, strict=True) if 8 <= n <= 12] or texts[:50]


def run_latency(settings: LatencySettings, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Single-request latency of every way per variant, and the concurrency sweep."""
    import grpc
    from bertserve.client import Client

    from .estimate import latency_seconds, say
    from .served import concurrent_callers
    from .ways import OnnxPeer

    began = time.monotonic()

    def estimate(turn: float) -> None:
        left = latency_seconds(
            round_seconds=turn,
            requests=settings.requests,
            variants=len(settings.variants),
            sweep_levels=len(settings.concurrency),
            sweep_seconds=settings.sweep_seconds,
        )
        log(
            f"one turn of every way {turn * 1000:.1f} ms; estimated: "
            f"{say(left, already=time.monotonic() - began)}"
        )

    threads = settings.threads or len(os.sched_getaffinity(0))
    short = short_texts(settings.repo / settings.model / settings.variants[0])
    rows: list[dict[str, Any]] = []
    sweep: list[dict[str, Any]] = []
    with echo_server(settings.answer_bytes) as echo_target:
        channel = grpc.insecure_channel(echo_target)
        echo = channel.unary_unary(
            ECHO_METHOD, request_serializer=_identity, response_deserializer=_identity
        )
        client = Client(settings.target, model=settings.model, timeout=60)
        try:
            for variant in settings.variants:
                peer = OnnxPeer(settings.repo / settings.model / variant, threads)
                ways: dict[str, Callable[[str], Any]] = {
                    "onnxruntime session (in process)": peer.embed_one,
                    "bertserve over gRPC (sync client)": lambda t, v=variant: client.embed(
                        [t], pooling="mean", variant=v
                    ),
                    "grpc.aio echo server (the floor)": lambda t: echo(t.encode()),
                }
                first = variant == settings.variants[0]
                times = interleaved(ways, short, settings.requests, estimate if first else None)
                for name, seconds in times.items():
                    rows.append({"way": name, "variant": variant, **_percentiles(seconds)})
                log(f"single requests [{variant}]: done")
                for callers in settings.concurrency:
                    result = asyncio.run(
                        concurrent_callers(
                            settings.target, short, variant, callers, settings.sweep_seconds
                        )
                    )
                    sweep.append(result.as_dict())
                    log(f"{callers} callers [{variant}]: {result.requests_per_s:.0f} requests/s")
        finally:
            client.close()
            channel.close()
    return {"model": settings.model, "threads": threads, "single": rows, "sweep": sweep}


def markdown(report: dict[str, Any]) -> str:
    """The single-request table, the sweep and the targets' ratios."""
    lines = [
        "| way | variant | p50 ms | p90 ms | p99 ms | p99 / p50 |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for row in report["single"]:
        lines.append(
            f"| {row['way']} | {row['variant']} | {row['p50_ms']:.2f} | {row['p90_ms']:.2f} | "
            f"{row['p99_ms']:.2f} | {row['p99_ms'] / row['p50_ms']:.2f} |"
        )
    lines += ["", "| callers | variant | requests/s | p50 ms | p99 ms | errors |"]
    lines += ["| ---: | --- | ---: | ---: | ---: | ---: |"]
    for row in report["sweep"]:
        lines.append(
            f"| {row['callers']} | {row['variant']} | {row['requests_per_s']:.0f} | "
            f"{row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['errors']} |"
        )
    lines += ["", "| target | variant | measured | goal |", "| --- | --- | ---: | ---: |"]
    for variant in dict.fromkeys(row["variant"] for row in report["single"]):
        by_way = {r["way"].split(" ")[0]: r for r in report["single"] if r["variant"] == variant}
        raw, served = by_way["onnxruntime"], by_way["bertserve"]
        lines.append(
            f"| p50 over the raw session, ms | {variant} | "
            f"{served['p50_ms'] - raw['p50_ms']:+.2f} | ≤ +1.00 |"
        )
        lines.append(
            f"| p99 / p50 | {variant} | {served['p99_ms'] / served['p50_ms']:.2f} | ≤ 2.00 |"
        )
        sweep = {s["callers"]: s for s in report["sweep"] if s["variant"] == variant}
        if len(sweep) > 1 and sweep[min(sweep)]["requests_per_s"]:
            most, one = sweep[max(sweep)], sweep[min(sweep)]
            lines.append(
                f"| {max(sweep)} callers / {min(sweep)}, requests/s | {variant} | "
                f"{most['requests_per_s'] / one['requests_per_s']:.2f} | ≥ 3.00 |"
            )
    return "\n".join(lines) + "\n"

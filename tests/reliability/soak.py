"""Soak (not run in CI): one server, a million random-length requests, errors, p50/p99 and the
server's memory reported every 10,000; then the fuzzer at 10x (100,000+ bad requests).

    python tests/reliability/soak.py --requests 1000000 --concurrency 16
    python tests/reliability/soak.py --requests 50000 --no-fuzz      # a shorter run

Only loopback is used; the run is bounded by --requests and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # tests/conftest.py before ours

import numpy as np  # noqa: E402
from bertserve.client import AsyncClient, BertserveError  # noqa: E402
from servers import rss_bytes, start_server  # noqa: E402
from test_load import sentence  # noqa: E402


async def _chunk(client: AsyncClient, texts: list[str], concurrency: int) -> tuple[list, int]:
    latencies: list[float] = []
    errors = 0

    async def worker(offset: int) -> None:
        nonlocal errors
        for index in range(offset, len(texts), concurrency):
            started = time.perf_counter()
            try:
                await client.embed([texts[index]])
            except BertserveError as error:
                errors += 1
                print(f"error: {error}", file=sys.stderr)
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return latencies, errors


async def soak(target: str, pid: int, requests: int, concurrency: int, every: int) -> int:
    rng = random.Random(7)
    errors = 0
    print("requests  errors  p50_ms  p99_ms  server_rss_mib", flush=True)
    async with AsyncClient(target, timeout=120) as client:
        for start in range(0, requests, every):
            texts = [sentence(rng) for _ in range(min(every, requests - start))]
            latencies, failed = await _chunk(client, texts, concurrency)
            errors += failed
            p50, p99 = np.percentile(latencies, [50, 99]) * 1000
            rss = rss_bytes(pid) / 2**20
            done = start + len(texts)
            print(f"{done:8d}  {errors:6d}  {p50:6.1f}  {p99:6.1f}  {rss:14.1f}", flush=True)
    return errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, help="model repository (default: the tests' cache)")
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--every", type=int, default=10_000)
    parser.add_argument("--no-fuzz", action="store_true", help="skip the 10x fuzzer")
    args = parser.parse_args()
    repo = args.repo
    if repo is None:
        from conftest import CACHE, MINILM_VARIANTS, _export_key, _exported

        repo = _exported(CACHE / _export_key(), "minilm", MINILM_VARIANTS, model="minilm")
    server = start_server(repo)
    try:
        errors = asyncio.run(
            soak(server.target, server.process.pid, args.requests, args.concurrency, args.every)
        )
        crashed = server.process.poll() is not None
    finally:
        code = server.stop()
    print(f"errors {errors}, server crashed: {crashed}, exit code after SIGTERM {code}")
    if args.no_fuzz:
        return int(bool(errors or crashed or code))
    fuzz = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", str(HERE / "test_fuzz.py")],
        env={**os.environ, "BERTSERVE_FUZZ_SCALE": "10"},
        cwd=HERE.parents[1],
    )
    return int(bool(errors or crashed or code or fuzz.returncode))


if __name__ == "__main__":
    sys.exit(main())

"""bertserve's own ways in ``bertserve bench --peers``: one call, many callers, the bulk CLI,
single requests and a sweep of concurrent callers, and the server's token counts."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .ways import BATCH, CALLERS, Latency


def server_tokens(metrics_url: str | None, label: str) -> tuple[int, int] | None:
    """(real, padding) tokens the server computed so far for ``label`` ("model/variant")."""
    if not metrics_url:
        return None
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    counts = {"real": 0.0, "padding": 0.0}
    for line in text.splitlines():
        if line.startswith("bertserve_tokens_total{") and f'model="{label}"' in line:
            kind = "real" if 'kind="real"' in line else "padding"
            counts[kind] += float(line.rsplit(" ", 1)[1])
    return int(counts["real"]), int(counts["padding"])


def one_call(client: Any, texts: Sequence[str], variant: str) -> tuple[np.ndarray, int]:
    result = client.embed(list(texts), pooling="mean", variant=variant, timeout=3600)
    return result.sentence_embedding, int(result.timing.computed_tokens)


def many_callers(client: Any, texts: Sequence[str], variant: str) -> tuple[np.ndarray, int]:
    """``CALLERS`` threads, each sending its share of the corpus-order batches of 32."""
    batches = [list(range(i, min(i + BATCH, len(texts)))) for i in range(0, len(texts), BATCH)]
    shares = [batches[k::CALLERS] for k in range(CALLERS)]
    out: list[np.ndarray | None] = [None] * len(texts)
    computed = [0] * CALLERS

    def caller(k: int) -> None:
        for batch in shares[k]:
            result = client.embed([texts[i] for i in batch], pooling="mean", variant=variant)
            for row, i in enumerate(batch):
                out[i] = result.sentence_embedding[row]
            computed[k] += int(result.timing.computed_tokens)

    with ThreadPoolExecutor(CALLERS) as pool:
        list(pool.map(caller, range(CALLERS)))
    return np.stack(out), sum(computed)  # type: ignore[arg-type]


def bulk_cli(target: str, corpus_file: Path, variant: str, workdir: Path) -> np.ndarray:
    """``bertserve embed --input FILE --output X.npy``, as a user runs it."""
    output = workdir / f"bulk-{variant}.npy"
    output.unlink(missing_ok=True)
    command = [sys.executable, "-m", "bertserve.client.cli", "embed", "--input", str(corpus_file)]
    command += ["--output", str(output), "--target", target, "--variant", variant]
    command += ["--pooling", "mean", "--no-progress"]
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode:
        raise RuntimeError(f"the bulk CLI failed: {run.stderr[-2000:]}")
    return np.load(output)


def single_requests(call: Callable[[str], Any], texts: Sequence[str], count: int) -> list[float]:
    """Seconds of ``count`` requests in a row, one short text each."""
    times = []
    for i in range(count):
        started = time.perf_counter()
        call(texts[i % len(texts)])
        times.append(time.perf_counter() - started)
    return times


async def concurrent_callers(
    target: str, texts: Sequence[str], variant: str, callers: int, duration: float
) -> Latency:
    """``callers`` closed-loop callers of one short text each, for ``duration`` seconds."""
    from bertserve.client import AsyncClient, BertserveError

    latencies: list[float] = []
    errors = 0
    async with AsyncClient(target, timeout=120) as client:
        await client.embed([texts[0]], pooling="mean", variant=variant)
        end = time.perf_counter() + duration

        async def caller(k: int) -> None:
            nonlocal errors
            i = k
            while time.perf_counter() < end:
                started = time.perf_counter()
                try:
                    await client.embed([texts[i % len(texts)]], pooling="mean", variant=variant)
                except BertserveError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - started)
                i += callers

        started = time.perf_counter()
        await asyncio.gather(*(caller(k) for k in range(callers)))
        seconds = time.perf_counter() - started
    ms = np.asarray(latencies or [0.0]) * 1000
    return Latency(
        "bertserve",
        variant,
        callers,
        len(latencies),
        seconds,
        float(np.percentile(ms, 50)),
        float(np.percentile(ms, 99)),
        errors,
    )


def latency_of(name: str, variant: str, times: list[float]) -> Latency:
    ms = np.asarray(times) * 1000
    return Latency(
        name,
        variant,
        1,
        len(times),
        float(sum(times)),
        float(np.percentile(ms, 50)),
        float(np.percentile(ms, 99)),
    )

"""The load generator of ``bertserve bench``: closed-loop callers against a running server (or
one it starts from --repo).

For each setting (variant x sequence length x batch size x concurrency) it runs closed-loop
workers for a duration or a request count and reports throughput (requests/s, sequences/s,
tokens/s) and latency (median, p90, p99), variants side by side, with the CPU model and its
vector flags: compare figures only within one run. The texts are real (bench/corpus.py), cut
to exactly the asked number of tokens by the server's own tokenizer.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np


def cpu_description() -> str:
    """``lscpu``'s model name and the vector flags that matter for int8 and fp32 speed."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "CPU: lscpu not available"
    fields = dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition(":") for line in text.splitlines())
    )
    flags = fields.get("Flags", "").split()
    wanted = sorted(f for f in flags if "vnni" in f or f.startswith("avx512") or f == "avx2")
    cores = fields.get("CPU(s)", "?")
    return f"CPU: {fields.get('Model name', '?')} ({cores} CPUs); flags: {' '.join(wanted) or '-'}"


def exact_length_texts(client: Any, length: int, count: int, model: str | None) -> list[str]:
    """``count`` real texts of exactly ``length`` tokens ([CLS] and [SEP] included): word
    prefixes of the corpus's news paragraphs (then tweets), one per source text, that the
    server's own tokenizer cuts into that many tokens (repeated if the corpus has too few).

    Two Tokenize calls per 64 source texts: their whole lengths, then, for those long enough,
    the few prefixes around the share of words the length asks for (tokens grow with words)."""
    from .corpus import news_paragraphs, tweets

    found: list[str] = []
    for source in (news_paragraphs(), tweets()):
        for start in range(0, len(source), 64):
            chunk = [text for text in source[start : start + 64] if text.split()]
            whole = client.tokenize(chunk, model=model, truncate=True)
            prefixes = []
            for text, encoding in zip(chunk, whole, strict=True):
                words, tokens = text.split(), len(encoding.input_ids)
                if tokens < length:
                    continue
                guess = round(len(words) * (length - 2) / max(1, tokens - 2))
                ks = range(
                    max(1, guess - PREFIX_SPREAD), min(len(words), guess + PREFIX_SPREAD) + 1
                )
                prefixes.append([" ".join(words[:k]) for k in ks])
            flat = [p for group in prefixes for p in group]
            if not flat:
                continue
            encodings = client.tokenize(flat, model=model, truncate=True)
            sizes = {
                text: len(e.input_ids) if not e.truncated else -1
                for text, e in zip(flat, encodings, strict=True)
            }
            for group in prefixes:
                exact = next((p for p in group if sizes[p] == length), None)
                if exact:
                    found.append(exact)
                    if len(found) == count:
                        return found
    if not found:
        raise ValueError(f"no text of the corpus is {length} tokens long")
    return (found * (count // len(found) + 1))[:count]


# prefixes tried on each side of the guessed number of words
PREFIX_SPREAD = 4


@dataclass
class Setting:
    variant: str
    length: int  # tokens per sequence, [CLS] and [SEP] included
    batch: int
    concurrency: int


@dataclass
class Figures:
    requests: int
    errors: int
    seconds: float
    sequences: int
    tokens: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    first_error: str = ""

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def _kwargs(model: str | None, variant: str, output: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"variant": variant or None, "model": model}
    if output == "tokens":
        kwargs["output"] = "tokens"
    return kwargs


def prepare(
    target: str, model: str | None, settings: list[Setting], output: str
) -> tuple[dict[int, list[str]], dict[tuple[str, int, int], float]]:
    """The measured first step: texts of each length (one pool per length, shared by the
    settings), then the seconds of one request of each (variant, length, batch) from a single
    caller (the median of three, after one that loads and allocates)."""
    from bertserve.client import Client

    count = max(64, 4 * max(s.batch for s in settings))
    per_request: dict[tuple[str, int, int], float] = {}
    with Client(target, timeout=120) as client:
        pools = {
            length: exact_length_texts(client, length, count, model)
            for length in dict.fromkeys(s.length for s in settings)
        }
        for setting in settings:
            key = (setting.variant, setting.length, setting.batch)
            if key in per_request:
                continue
            kwargs = _kwargs(model, setting.variant, output)
            times = []
            for i in range(4):
                started = time.perf_counter()
                client.embed(pools[setting.length][i : i + setting.batch], **kwargs)
                times.append(time.perf_counter() - started)
            per_request[key] = float(np.median(times[1:]))
    return pools, per_request


async def run_setting(
    target: str,
    model: str | None,
    setting: Setting,
    pool: list[str],
    *,
    duration: float | None,
    count: int | None,
    warmup: int,
    output: str,
) -> Figures:
    """Closed-loop load: ``concurrency`` workers each sending the next request when answered,
    texts drawn from ``pool`` (texts of exactly ``setting.length`` tokens)."""
    from bertserve.client import AsyncClient, BertserveError

    kwargs = _kwargs(model, setting.variant, output)
    latencies: list[float] = []
    state = {"sent": 0, "errors": 0, "sequences": 0, "tokens": 0, "first_error": ""}
    async with AsyncClient(target, timeout=120) as client:
        for i in range(warmup):
            await client.embed(pool[i : i + setting.batch], **kwargs)
        deadline = time.perf_counter() + duration if duration else None

        async def worker(index: int) -> None:
            rng = random.Random(index)
            while True:
                if deadline is not None and time.perf_counter() >= deadline:
                    return
                if count is not None:
                    if state["sent"] >= count:
                        return
                    state["sent"] += 1
                start = rng.randrange(len(pool) - setting.batch + 1)
                begin = time.perf_counter()
                try:
                    result = await client.embed(pool[start : start + setting.batch], **kwargs)
                except BertserveError as exc:
                    state["errors"] += 1
                    state["first_error"] = state["first_error"] or str(exc)
                    continue
                latencies.append(time.perf_counter() - begin)
                state["sequences"] += len(result)
                state["tokens"] += int(result.lengths.sum())

        started = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(setting.concurrency)))
        seconds = time.perf_counter() - started
    ms = np.asarray(latencies) * 1000 if latencies else np.zeros(1)
    return Figures(
        requests=len(latencies),
        errors=state["errors"],
        seconds=seconds,
        sequences=state["sequences"],
        tokens=state["tokens"],
        p50_ms=float(np.percentile(ms, 50)),
        p90_ms=float(np.percentile(ms, 90)),
        p99_ms=float(np.percentile(ms, 99)),
        first_error=str(state["first_error"]),
    )


def format_table(rows: list[tuple[Setting, Figures]]) -> str:
    """One line per setting; variants of the same setting adjacent, with the speed-up."""
    header = (
        f"{'variant':<10}{'len':>5}{'batch':>6}{'conc':>5}{'req/s':>9}{'seq/s':>9}"
        f"{'tok/s':>10}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'errors':>7}{'vs first':>9}"
    )
    lines = [header, "-" * len(header)]
    base: dict[tuple[int, int, int], float] = {}
    for setting, fig in rows:
        key = (setting.length, setting.batch, setting.concurrency)
        base.setdefault(key, fig.tokens_per_s)
        ratio = fig.tokens_per_s / base[key] if base[key] else 0.0
        lines.append(
            f"{setting.variant or 'default':<10}{setting.length:>5}{setting.batch:>6}"
            f"{setting.concurrency:>5}{fig.rps:>9.1f}{fig.sequences / fig.seconds:>9.1f}"
            f"{fig.tokens_per_s:>10.0f}{fig.p50_ms:>9.1f}{fig.p90_ms:>9.1f}{fig.p99_ms:>9.1f}"
            f"{fig.errors:>7}{ratio:>8.2f}x"
        )
    return "\n".join(lines)


@contextmanager
def started_server(repo: Path, extra: list[str]) -> Iterator[str]:
    """A ``bertserve serve`` subprocess on a free loopback port; yields its target."""
    from bertserve.client import Client

    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        log = open(Path(tmp) / "server.log", "w+")  # noqa: SIM115
        command = [sys.executable, "-m", "bertserve.client.cli", "serve", "--repo", str(repo)]
        command += ["--host", "127.0.0.1", "--port", "0", "--port-file", str(port_file), *extra]
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300
            while True:
                if process.poll() is not None:
                    log.seek(0)
                    output = log.read()
                    missing = re.search(r"needs the module '([\w.]+)'.*", output)
                    if missing:  # said without a traceback, with the pip command that fixes it
                        raise ModuleNotFoundError(
                            f"the server it starts {missing[0]}", name=missing[1]
                        )
                    raise RuntimeError(f"the server exited:\n{output[-4000:]}")
                if port_file.is_file() and port_file.read_text().strip():
                    target = f"127.0.0.1:{port_file.read_text().strip()}"
                    try:
                        with Client(target, timeout=5) as client:
                            if client.health() == "SERVING":
                                break
                    except Exception:  # not up yet
                        pass
                if time.monotonic() > deadline:
                    raise RuntimeError("the server did not become healthy in 300 s")
                time.sleep(0.5)
            yield target
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()


def run_load(args: Any, cpu: str, target: str | None) -> int:
    """The load generator's part of ``bertserve bench``: the plan and what it will take, every
    setting with the time left, then the table."""
    from .estimate import load_seconds, rescaled, say

    duration = args.duration if args.duration or args.requests else 10.0
    if (duration is not None and duration <= 0) or (
        args.requests is not None and args.requests < 1
    ):
        print("bertserve bench: --duration and --requests must be positive", file=sys.stderr)
        return 2
    variants = [v.strip() for v in args.variants.split(",") if v.strip()] or [""]
    concurrency = args.concurrency or (1, 8)
    settings = [
        Setting(variant, length, batch, callers)
        for length in args.lengths
        for batch in args.batch_sizes
        for callers in concurrency
        for variant in variants
    ]
    each = f"{duration:g} s" if duration else f"{args.requests} requests"
    print(
        f"{len(settings)} settings ({len(variants)} variant(s) x {len(args.lengths)} length(s) "
        f"x {len(args.batch_sizes)} batch size(s) x {len(concurrency)} concurrency level(s)), "
        f"{each} each"
        + (f": {duration * len(settings):g} s of measuring" if duration else "")
        + "; the estimate follows a measured first step",
        flush=True,
    )
    began = time.monotonic()

    def measure(target: str) -> list[tuple[Setting, Figures]]:
        pools, per_request = prepare(target, args.model, settings, args.output)
        step = time.monotonic() - began
        seconds = duration if not args.requests else None
        parts = [
            load_seconds(
                [(s.variant, s.length, s.batch, s.concurrency)],
                per_request,
                seconds=seconds,
                requests=args.requests,
                warmup=args.warmup,
            )[0]
            for s in settings
        ]
        upper = seconds is None
        print(
            f"target {target}; first step {step:.1f} s (server, texts, one request of each "
            f"kind); estimated: {say(sum(parts), upper=upper, already=step)}",
            flush=True,
        )
        rows = []
        actual = 0.0
        for index, setting in enumerate(settings):
            started = time.monotonic()
            figures = asyncio.run(
                run_setting(
                    target,
                    args.model,
                    setting,
                    pools[setting.length],
                    duration=duration if not args.requests else None,
                    count=args.requests,
                    warmup=args.warmup,
                    output=args.output,
                )
            )
            actual += time.monotonic() - started
            left = rescaled(sum(parts[index + 1 :]), actual, sum(parts[: index + 1]))
            print(
                f"[{index + 1}/{len(settings)}] {setting.variant or 'default'} "
                f"{setting.length} tokens x {setting.batch}, {setting.concurrency} caller(s): "
                f"{figures.rps:.1f} requests/s"
                + (f"; {say(left)} left" if index + 1 < len(settings) else ""),
                flush=True,
            )
            if figures.first_error:
                print(f"  {setting}: {figures.errors} errors, first: {figures.first_error}")
            rows.append((setting, figures))
        return rows

    if target is None:
        with started_server(args.repo, args.server_arg) as started:
            rows = measure(started)
    else:
        rows = measure(target)
    print(format_table(rows))
    print(cpu)
    print(
        f"took {time.monotonic() - began:.1f} s; client and server share this machine "
        f"({os.cpu_count()} CPUs): compare figures within one run only"
    )
    if args.json:
        report = {
            "cpu": cpu,
            "results": [
                {**asdict(s), **asdict(f), "rps": f.rps, "tokens_per_s": f.tokens_per_s}
                for s, f in rows
            ],
        }
        args.json.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return 1 if any(f.requests == 0 for _, f in rows) else 0

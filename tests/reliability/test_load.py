"""Load on a real server: overload far beyond capacity, and memory over tens of thousands of
requests. Figures are reported; the hard bounds asserted are the issue's (memory growth),
never speed.

``BERTSERVE_LOAD_SCALE=50`` multiplies the counts (the soak script's 1,000,000 requests).
"""

from __future__ import annotations

import asyncio
import os
import random
import time

import grpc
import numpy as np
from bertserve.client import AsyncClient, BertserveError, Client
from bertserve.v1 import bertserve_pb2 as pb
from bertserve.v1 import bertserve_pb2_grpc
from scenarios import baseline, settled, text
from servers import rss_bytes, scrape, start_server, total

SCALE = float(os.environ.get("BERTSERVE_LOAD_SCALE", "1"))
VOCABULARY = (
    "the a of to and in is it that was for on are with as his they be at one have this from "
    "or had by word but what some we can out other were all there when up use your how said "
    "an each she which do their time if will way about many then them write would like so "
    "these her long make thing see him two has look more day could go come did number sound "
    "no most people my over know water than call first who may down side been now find paris"
).split()


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choices(VOCABULARY, k=rng.randint(1, 48)))


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


def test_overload_refuses_fast_answers_every_accepted_call_once(model_repo, figures):
    server = start_server(
        model_repo,
        *("--max-queue-requests", "16", "--max-concurrent-rpcs", "48", "--max-batch-size", "16"),
    )
    callers, seconds = 128, 8 * SCALE
    try:
        at_rest = baseline(server)

        async def load():
            async with AsyncClient(server.target, timeout=120) as client:
                expected = (await client.embed([text(i) for i in range(40)])).sentence_embedding
                before = scrape(server.metrics_url)
                outcomes: dict[str, list[float]] = {"OK": [], "RESOURCE_EXHAUSTED": []}
                others: list[str] = []
                wrong = 0
                end = time.monotonic() + seconds
                rss_peak = 0

                async def caller(worker: int) -> None:
                    nonlocal wrong
                    i = worker
                    while time.monotonic() < end:
                        started = time.monotonic()
                        try:
                            result = await client.embed([text(i)])
                        except BertserveError as error:
                            key = error.code.name
                            if key not in outcomes:
                                others.append(f"{key}: {error.details}")
                                continue
                            outcomes[key].append(time.monotonic() - started)
                            continue
                        outcomes["OK"].append(time.monotonic() - started)
                        good = result.lengths.tolist() == [i % 5 + 6] and np.allclose(
                            result.sentence_embedding[0], expected[i % 40], atol=1e-5
                        )
                        wrong += not good
                        i += callers

                async def sample_memory() -> None:
                    nonlocal rss_peak
                    while time.monotonic() < end:
                        rss_peak = max(rss_peak, rss_bytes(server.process.pid))
                        await asyncio.sleep(0.2)

                rss_start = rss_bytes(server.process.pid)
                await asyncio.gather(sample_memory(), *(caller(w) for w in range(callers)))
                return outcomes, others, wrong, before, rss_start, rss_peak

        outcomes, others, wrong, before, rss_start, rss_peak = asyncio.run(load())
        now = settled(server, at_rest)
        after = scrape(server.metrics_url)
    finally:
        server.stop()
    answered = total(after, "bertserve_requests_total", method="Embed", code="OK") - total(
        before, "bertserve_requests_total", method="Embed", code="OK"
    )
    refused = total(
        after, "bertserve_requests_total", method="Embed", code="RESOURCE_EXHAUSTED"
    ) - total(before, "bertserve_requests_total", method="Embed", code="RESOURCE_EXHAUSTED")
    ok, exhausted = outcomes["OK"], outcomes["RESOURCE_EXHAUSTED"]
    assert not others, others[:5]
    assert wrong == 0
    assert ok and exhausted, "the load did not overload the server"
    # every accepted call answered exactly once: the server counted what the callers got
    assert answered == len(ok) and refused == len(exhausted)
    growth = (rss_peak - rss_start) / 2**20
    assert growth < 150, f"RSS grew {growth:.0f} MiB under overload"
    figures["overload"] = {
        "callers": callers,
        "seconds": seconds,
        "answered": len(ok),
        "refused_resource_exhausted": len(exhausted),
        "wrong_answers": wrong,
        "other_codes": len(others),
        "ok_p50_ms": round(percentile(ok, 50) * 1000, 1),
        "ok_p99_ms": round(percentile(ok, 99) * 1000, 1),
        "refused_p50_ms": round(percentile(exhausted, 50) * 1000, 1),
        "refused_p99_ms": round(percentile(exhausted, 99) * 1000, 1),
        "rss_growth_mib": round(growth, 1),
        "gauges_after": now,
    }


async def _random_requests(target: str, count: int, seed: int, concurrency: int = 16) -> int:
    rng = random.Random(seed)
    texts = [sentence(rng) for _ in range(count)]
    done = 0
    async with AsyncClient(target, timeout=300) as client:

        async def worker(start: int) -> None:
            nonlocal done
            for index in range(start, count, concurrency):
                result = await client.embed([texts[index]])
                assert result.sentence_embedding.shape == (1, 384)
                done += 1

        await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return done


# the measured bad calls run in this many rounds (5,000 of each kind in all, at scale 1)
BAD_ROUNDS = 5


async def _bad_calls(target: str, count: int) -> dict[str, int]:
    """``count`` each of cancelled, deadline-expired, invalid and aborted-stream calls."""
    codes: dict[str, int] = {}
    async with grpc.aio.insecure_channel(target) as channel:
        stub = bertserve_pb2_grpc.BertServiceStub(channel)
        request = pb.EmbedRequest(texts=[" ".join(VOCABULARY[:40])] * 4)

        async def counted(kind: str, call) -> None:
            try:
                await call
                codes[f"{kind}:OK"] = codes.get(f"{kind}:OK", 0) + 1
            except (grpc.RpcError, asyncio.CancelledError) as error:
                code = error.code().name if isinstance(error, grpc.RpcError) else "CANCELLED"
                codes[f"{kind}:{code}"] = codes.get(f"{kind}:{code}", 0) + 1

        for start in range(0, count, 50):
            batch = range(start, min(count, start + 50))
            # cancelled by the caller soon after sending
            calls = [stub.Embed(request, timeout=60) for _ in batch]
            await asyncio.sleep(0.002)
            for call in calls:
                call.cancel()
            await asyncio.gather(*(counted("cancelled", c) for c in calls))
            # a deadline too short to be met
            expiring = [stub.Embed(request, timeout=0.001) for _ in batch]
            await asyncio.gather(*(counted("deadline", c) for c in expiring))
            # invalid
            bad = pb.EmbedRequest(texts=["x"], layers=[99])
            await asyncio.gather(*(counted("invalid", stub.Embed(bad, timeout=60)) for _ in batch))
            # a stream opened, sent one request, and abandoned
            for _ in batch:
                call = stub.EmbedStream(timeout=60)
                try:
                    await call.write(pb.EmbedRequest(id="1", texts=["abandoned stream"]))
                    kind = "aborted_stream"
                except grpc.RpcError:
                    # the stream ended before the write (under load: refused, or its slot not
                    # yet free); not ":CODE", as grpc.aio's client reports such a write as
                    # INTERNAL "Internal error from Core" whatever the server sent (grpc#36066)
                    kind = f"aborted_stream, ended before the write: {(await call.code()).name}"
                call.cancel()
                codes[kind] = codes.get(kind, 0) + 1
    return codes


def test_memory_stays_flat_over_random_requests_and_bad_calls(model_repo, figures):
    server = start_server(model_repo)
    count, bad = int(20_000 * SCALE), int(5_000 * SCALE)
    per_round = max(1, bad // BAD_ROUNDS)
    try:
        at_rest = baseline(server)
        # allocator warm-up: onnxruntime's arena grows in big steps the first time it meets
        # larger batch shapes (the bad calls' 4-text requests batch up to 64 sequences); what
        # is measured after is growth that repeats, i.e. a leak
        with Client(server.target, timeout=300) as client:  # the largest batch either can form
            client.embed([" ".join(VOCABULARY[:48])] * 64)
        asyncio.run(_random_requests(server.target, 2_000, seed=1))
        # the bad calls' own warm-up: their first thousands step RSS up by as much as ~25 MiB
        asyncio.run(_bad_calls(server.target, 2_000))
        rss_start = rss_bytes(server.process.pid)
        started = time.monotonic()
        done = asyncio.run(_random_requests(server.target, count, seed=2))
        seconds = time.monotonic() - started
        rss_after_requests = rss_bytes(server.process.pid)
        # The bad calls in rounds, their growth taken at the median round's pace: going back
        # from the random requests to the bad calls' shapes costs the allocator a one-off step
        # of 14-27 MiB of anonymous memory outside Python's heap (whose traced size and object
        # counts stay flat under tracemalloc) in one of the first rounds, kept or later given
        # back; a leak grows in every round.
        codes: dict[str, int] = {}
        rss_rounds = [rss_after_requests]
        for _ in range(BAD_ROUNDS):
            for key, value in asyncio.run(_bad_calls(server.target, per_round)).items():
                codes[key] = codes.get(key, 0) + value
            rss_rounds.append(rss_bytes(server.process.pid))
        now = settled(server, at_rest)
    finally:
        server.stop()
    growth = (rss_after_requests - rss_start) / 2**20
    steps = np.diff(rss_rounds) / 2**20
    bad_growth = float(np.median(steps)) * BAD_ROUNDS
    rounds_mib = [round(r / 2**20, 1) for r in rss_rounds]
    assert done == count
    assert not any(k.endswith((":INTERNAL", ":UNKNOWN")) for k in codes), codes
    figures["memory"] = {
        "requests": done,
        "requests_per_s": round(done / seconds, 1),
        "rss_start_mib": round(rss_start / 2**20, 1),
        "rss_growth_mib": round(growth, 1),
        "bad_calls_each_per_round": per_round,
        "bad_call_codes": codes,
        "rss_before_and_after_each_bad_round_mib": rounds_mib,
        "rss_growth_over_bad_calls_mib": round(float(steps.sum()), 1),
        "rss_growth_over_bad_calls_at_median_round_mib": round(bad_growth, 1),
        "gauges_after": now,
    }
    assert growth <= 20, f"RSS grew {growth:.1f} MiB over {count} requests"
    assert bad_growth <= 20, (
        f"RSS grew {bad_growth:.1f} MiB at the median round's pace over {BAD_ROUNDS} rounds of "
        f"{4 * per_round} bad calls (RSS before and after each round, MiB: {rounds_mib})"
    )

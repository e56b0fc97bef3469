"""The dynamic batcher with a deterministic stand-in runtime (no model)."""

from __future__ import annotations

import asyncio
import threading

import pytest
from bertserve.server.batcher import Batcher
from bertserve.server.config import BatchSettings
from bertserve.server.errors import DeadlineExceeded, Overloaded, Unavailable


class StandIn:
    """Records every batch; answers each payload with (payload, batch number); can be held
    (until ``release``) or fail on payload "boom"."""

    def __init__(self, hold: bool = False) -> None:
        self.batches: list[list[object]] = []
        self.gate = threading.Event()
        self.started = threading.Event()
        if not hold:
            self.gate.set()

    def __call__(self, payloads: list[object]) -> list[object]:
        self.started.set()
        self.gate.wait(10)
        self.batches.append(list(payloads))
        if "boom" in payloads:
            raise RuntimeError("the stand-in runtime failed")
        return [(payload, len(self.batches)) for payload in payloads]

    def computed(self) -> list[object]:
        return [p for batch in self.batches for p in batch]


def settings(**overrides: object) -> BatchSettings:
    base = dict(
        max_batch_tokens=1000, max_batch_size=4, max_queue_delay_ms=20, max_queue_requests=100
    )
    return BatchSettings(**{**base, **overrides})


async def test_a_request_larger_than_a_batch_is_split_and_reassembled_in_order():
    runtime = StandIn()
    batcher = Batcher(runtime, settings(max_batch_size=3))
    payloads = [f"s{i}" for i in range(10)]
    result = await batcher.submit(payloads, [5] * 10)
    assert [r[0] for r in result.results] == payloads
    assert [len(b) for b in runtime.batches] == [3, 3, 3, 1]
    assert result.computed_tokens == 50
    await batcher.close()


async def test_batches_respect_the_padded_token_budget():
    runtime = StandIn()
    batcher = Batcher(runtime, settings(max_batch_tokens=100, max_batch_size=64))
    lengths = [30, 30, 30, 30, 60, 10]
    result = await batcher.submit(list(range(6)), lengths)
    assert [r[0] for r in result.results] == list(range(6))
    for batch in runtime.batches:
        assert max(lengths[p] for p in batch) * len(batch) <= 100
    assert sorted(runtime.computed()) == list(range(6))
    await batcher.close()


async def test_concurrent_callers_share_a_batch_and_get_their_own_results():
    runtime = StandIn()
    batcher = Batcher(runtime, settings(max_batch_size=64, max_queue_delay_ms=50))
    results = await asyncio.gather(
        *(
            batcher.submit(
                [f"{caller}-{i}" for i in range(caller + 1)], [caller + 1] * (caller + 1)
            )
            for caller in range(5)
        )
    )
    for caller, result in enumerate(results):
        assert [r[0] for r in result.results] == [f"{caller}-{i}" for i in range(caller + 1)]
    assert len(runtime.batches) < 5  # batched together, not one run per caller
    await batcher.close()


async def test_sequences_are_grouped_by_length_and_the_oldest_goes_first():
    runtime = StandIn(hold=True)
    batcher = Batcher(runtime, settings(max_batch_size=2, max_queue_delay_ms=0, length_window=16))
    blocker = asyncio.create_task(batcher.submit(["first"], [1]))
    await asyncio.to_thread(runtime.started.wait, 5)  # the worker is busy; the rest queue up
    lengths = {"a": 100, "b": 5, "c": 98, "d": 6}
    tasks = [
        asyncio.create_task(batcher.submit([name], [length])) for name, length in lengths.items()
    ]
    await asyncio.sleep(0.05)
    runtime.gate.set()
    await asyncio.gather(blocker, *tasks)
    assert runtime.batches[1:] == [["a", "c"], ["b", "d"]]
    await batcher.close()


async def test_a_failed_batch_fails_only_its_callers_and_the_loop_lives_on():
    runtime = StandIn()
    batcher = Batcher(runtime, settings(max_batch_size=1))
    bad, good = await asyncio.gather(
        batcher.submit(["boom"], [3]), batcher.submit(["fine"], [3]), return_exceptions=True
    )
    assert isinstance(bad, RuntimeError)
    assert [r[0] for r in good.results] == ["fine"]
    later = await batcher.submit(["later"], [3])
    assert [r[0] for r in later.results] == ["later"]
    await batcher.close()


async def test_a_cancelled_request_is_dropped_from_the_queue_and_never_computed():
    runtime = StandIn(hold=True)
    batcher = Batcher(runtime, settings(max_batch_size=1, max_queue_delay_ms=0))
    blocker = asyncio.create_task(batcher.submit(["running"], [1]))
    await asyncio.to_thread(runtime.started.wait, 5)
    cancelled = asyncio.create_task(batcher.submit(["cancelled-1", "cancelled-2"], [1, 1]))
    await asyncio.sleep(0.02)
    assert batcher.queue_depth == 1
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    runtime.gate.set()
    await blocker
    after = await batcher.submit(["after"], [1])
    assert [r[0] for r in after.results] == ["after"]
    assert runtime.computed() == ["running", "after"]
    assert batcher.queue_depth == 0
    await batcher.close()


async def test_an_expired_request_gets_deadline_exceeded_and_is_never_computed():
    runtime = StandIn(hold=True)
    batcher = Batcher(runtime, settings(max_batch_size=1, max_queue_delay_ms=0))
    blocker = asyncio.create_task(batcher.submit(["running"], [1]))
    await asyncio.to_thread(runtime.started.wait, 5)
    with pytest.raises(DeadlineExceeded):
        await batcher.submit(["late"], [1], timeout=0.05)
    runtime.gate.set()
    await blocker
    await batcher.submit(["after"], [1])
    assert "late" not in runtime.computed()
    await batcher.close()


async def test_a_full_queue_refuses_with_overloaded():
    runtime = StandIn(hold=True)
    batcher = Batcher(
        runtime, settings(max_batch_size=1, max_queue_delay_ms=0, max_queue_requests=2)
    )
    running = asyncio.create_task(batcher.submit(["running"], [1]))
    await asyncio.to_thread(runtime.started.wait, 5)
    waiting = [asyncio.create_task(batcher.submit([f"w{i}"], [1])) for i in range(2)]
    await asyncio.sleep(0.02)
    with pytest.raises(Overloaded, match="queue full"):
        await batcher.submit(["one too many"], [1])
    runtime.gate.set()
    await asyncio.gather(running, *waiting)
    assert "one too many" not in runtime.computed()
    await batcher.close()


async def test_closing_finishes_queued_work_and_then_refuses():
    runtime = StandIn(hold=True)
    batcher = Batcher(runtime, settings(max_batch_size=1, max_queue_delay_ms=0))
    tasks = [asyncio.create_task(batcher.submit([f"r{i}"], [1])) for i in range(3)]
    await asyncio.to_thread(runtime.started.wait, 5)
    closing = asyncio.create_task(batcher.close(timeout=10))
    await asyncio.sleep(0.02)
    with pytest.raises(Unavailable):
        await batcher.submit(["new"], [1])
    runtime.gate.set()
    results = await asyncio.gather(*tasks)
    await closing
    assert [r.results[0][0] for r in results] == ["r0", "r1", "r2"]


async def test_a_lone_caller_does_not_wait_for_the_queue_delay():
    runtime = StandIn()
    batcher = Batcher(runtime, settings(max_queue_delay_ms=600_000))
    result = await asyncio.wait_for(batcher.submit(["alone"], [3]), 60)
    assert [r[0] for r in result.results] == ["alone"]
    await batcher.close()


async def test_under_concurrent_load_it_waits_to_fill_the_batch():
    runtime = StandIn()
    batcher = Batcher(runtime, settings(max_batch_size=64, max_queue_delay_ms=500))
    await asyncio.gather(batcher.submit(["a"], [3]), batcher.submit(["b"], [3]))  # concurrent
    first = asyncio.create_task(batcher.submit(["c"], [3]))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(batcher.submit(["d"], [3]))
    await asyncio.gather(first, second)
    assert runtime.batches == [["a", "b"], ["c", "d"]]
    await batcher.close()

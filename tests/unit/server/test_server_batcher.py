"""The dynamic batcher with a deterministic stand-in runtime (no model); its planner:
test_server_plan.py."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from bertserve.server.batcher import Batcher
from bertserve.server.config import BatchSettings
from bertserve.server.errors import DeadlineExceeded, InvalidArgument, Overloaded, Unavailable
from bertserve.server.plan import CostModel


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


class Recorder:
    """The batcher's observer, recording what it reports: the queue's depth after each change
    and the sequences computed."""

    def __init__(self) -> None:
        self.requests = self.sequences = self.tokens = self.computed = 0

    def batch_done(self, size: int, real_tokens: int, padded_tokens: int, seconds: float) -> None:
        self.computed += size

    def queued(self, seconds: float) -> None:
        pass

    def dropped(self, reason: str, sequences: int) -> None:
        pass

    def depth(self, requests: int, sequences: int, tokens: int) -> None:
        self.requests, self.sequences, self.tokens = requests, sequences, tokens


async def until(condition, timeout: float = 10.0) -> None:
    """Poll ``condition`` on the event loop until it holds; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "the batcher never reached the state the test waits for"
        await asyncio.sleep(0.001)


async def queued(seen: Recorder, requests: int) -> None:
    """Until the batcher has reported ``requests`` requests waiting in its queue."""
    await until(lambda: seen.requests == requests)


def settings(**overrides: object) -> BatchSettings:
    base = dict(
        max_batch_tokens=1000, max_batch_size=4, max_queue_delay_ms=20, max_queue_requests=100
    )
    return BatchSettings(**{**base, **overrides})


def refusing(batcher: Batcher):
    """A condition: the batcher refuses new requests (it is closing)."""

    def check() -> bool:
        try:
            batcher.admit(1)
        except Unavailable:
            return True
        return False

    return check


async def held(
    cost: CostModel | None = None, **overrides: object
) -> tuple[StandIn, Recorder, Batcher, asyncio.Task]:
    """A batcher (one sequence a batch, no queue delay) whose only worker is busy with the held
    batch "running": whatever comes next queues behind it."""
    runtime = StandIn(hold=True)
    seen = Recorder()
    limits = {"max_batch_size": 1, "max_queue_delay_ms": 0, **overrides}
    batcher = Batcher(runtime, settings(**limits), observer=seen, cost=cost)
    running = asyncio.create_task(batcher.submit(["running"], [1]))
    await asyncio.to_thread(runtime.started.wait, 5)
    return runtime, seen, batcher, running


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


async def test_sequences_are_grouped_by_length_and_the_longest_waiting_goes_first():
    runtime, seen, batcher, blocker = await held(max_batch_size=2, length_window=16)
    lengths = {"a": 100, "b": 5, "c": 98, "d": 6}
    tasks = [
        asyncio.create_task(batcher.submit([name], [length])) for name, length in lengths.items()
    ]
    await queued(seen, 4)
    runtime.gate.set()
    await asyncio.gather(blocker, *tasks)
    assert [sorted(batch) for batch in runtime.batches[1:]] == [["a", "c"], ["b", "d"]]
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
    runtime, seen, batcher, blocker = await held()
    cancelled = asyncio.create_task(batcher.submit(["cancelled-1", "cancelled-2"], [1, 1]))
    await queued(seen, 1)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    runtime.gate.set()
    await blocker
    after = await batcher.submit(["after"], [1])
    assert [r[0] for r in after.results] == ["after"]
    assert runtime.computed() == ["running", "after"]
    assert seen.requests == 0
    await batcher.close()


async def test_an_expired_request_gets_deadline_exceeded_and_is_never_computed():
    runtime, _, batcher, blocker = await held()
    with pytest.raises(DeadlineExceeded):
        await batcher.submit(["late"], [1], timeout=0.05)
    runtime.gate.set()
    await blocker
    await batcher.submit(["after"], [1])
    assert "late" not in runtime.computed()
    await batcher.close()


async def test_a_full_queue_refuses_with_overloaded():
    runtime, seen, batcher, running = await held(max_queue_requests=2)
    waiting = [asyncio.create_task(batcher.submit([f"w{i}"], [1])) for i in range(2)]
    await queued(seen, 2)
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
    await until(refusing(batcher))
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
    runtime, seen = StandIn(), Recorder()
    batcher = Batcher(runtime, settings(max_batch_size=64, max_queue_delay_ms=500), observer=seen)
    await asyncio.gather(batcher.submit(["a"], [3]), batcher.submit(["b"], [3]))  # concurrent
    first = asyncio.create_task(batcher.submit(["c"], [3]))
    await queued(seen, 1)  # waiting for company (the last batch served two callers)
    second = asyncio.create_task(batcher.submit(["d"], [3]))
    await asyncio.gather(first, second)
    assert runtime.batches == [["a", "b"], ["c", "d"]]
    await batcher.close()


CPU = CostModel(overhead_s=1e-3, per_token_s=1.8e-4, per_token_length_s=1e-7)


# -- the queue under load ---------------------------------------------------------------------


async def test_one_big_request_is_cut_into_length_sorted_batches():
    runtime = StandIn()
    batcher = Batcher(runtime, settings(max_batch_size=32, max_batch_tokens=4096), cost=CPU)
    lengths = [int(x) for x in np.random.default_rng(3).integers(5, 200, 500)]
    result = await batcher.submit(list(range(500)), lengths)
    assert [r[0] for r in result.results] == list(range(500))
    computed = sum(max(lengths[p] for p in batch) * len(batch) for batch in runtime.batches)
    assert computed / sum(lengths) <= 1.08
    assert result.computed_tokens == computed
    await batcher.close()


async def test_a_small_request_waits_about_one_batch_behind_a_huge_one():
    runtime, seen = StandIn(hold=True), Recorder()
    limits = settings(max_batch_size=16, max_queue_delay_ms=0)
    batcher = Batcher(runtime, limits, cost=CPU, observer=seen)
    huge = asyncio.create_task(batcher.submit([f"h{i}" for i in range(6000)], [8] * 6000))
    await asyncio.to_thread(runtime.started.wait, 5)  # the huge one's first batch runs
    small_call = asyncio.create_task(batcher.submit(["small"], [8]))
    await queued(seen, 2)
    runtime.gate.set()
    small = await small_call
    assert [r[0] for r in small.results] == ["small"]
    # the small one went into one of the next two batches, not behind 6,000 sequences
    position = next(i for i, batch in enumerate(runtime.batches) if "small" in batch)
    assert position <= 2
    assert len((await huge).results) == 6000
    await batcher.close()


async def test_waiting_requests_take_turns_so_none_starves():
    runtime, seen, batcher, blocker = await held(CPU, max_batch_size=4, length_window=8)
    # three callers of very different lengths: the turn passes from one to the next
    callers = {
        name: asyncio.create_task(batcher.submit([f"{name}{i}" for i in range(12)], [n] * 12))
        for name, n in (("a", 5), ("b", 300), ("c", 40))
    }
    await queued(seen, 3)
    runtime.gate.set()
    await asyncio.gather(blocker, *callers.values())
    owners = [{p[0] for p in batch} for batch in runtime.batches[1:]]
    assert owners[:3] == [{"a"}, {"b"}, {"c"}]  # round-robin, not the shortest every time
    await batcher.close()


async def test_the_queue_is_bounded_in_sequences_and_tokens():
    runtime, seen, batcher, running = await held(max_queue_sequences=10, max_queue_tokens=100)
    with pytest.raises(InvalidArgument, match="more sequences than"):
        await batcher.submit(list(range(11)), [1] * 11)
    with pytest.raises(InvalidArgument, match="more tokens than"):
        await batcher.submit([0], [101])
    waiting = asyncio.create_task(batcher.submit(list(range(8)), [10] * 8))
    await queued(seen, 1)
    assert seen.sequences == 8
    with pytest.raises(Overloaded, match="at most 10 sequences"):
        await batcher.submit([0, 1, 2], [1, 1, 1])
    with pytest.raises(Overloaded, match="at most 100 tokens"):
        await batcher.submit([0], [30])
    runtime.gate.set()
    await asyncio.gather(running, waiting)
    assert seen.sequences == 0
    await batcher.close()


async def test_a_cancelled_big_request_leaves_the_queue_at_once():
    runtime = StandIn(hold=True)
    seen = Recorder()
    batcher = Batcher(runtime, settings(max_batch_size=2, max_queue_delay_ms=0), observer=seen)
    big = asyncio.create_task(batcher.submit(list(range(1000)), [3] * 1000))
    await asyncio.to_thread(runtime.started.wait, 5)
    assert seen.sequences == 998
    big.cancel()
    with pytest.raises(asyncio.CancelledError):
        await big
    assert seen.sequences == 0 and seen.requests == 0
    runtime.gate.set()
    after = await batcher.submit(["after"], [3])
    assert [r[0] for r in after.results] == ["after"]
    assert len(runtime.computed()) == 3  # the batch that was running, then "after"
    await batcher.close()


async def test_scheduling_a_very_large_queue_stays_cheap():
    """200,000 sequences in one request: each batch looks at a window, not at the queue (the
    old batcher rebuilt its pending list for every batch: quadratic, minutes for this)."""
    batcher = Batcher(
        lambda payloads: payloads,
        settings(max_batch_size=64, max_queue_sequences=300_000, max_queue_tokens=10**7),
    )
    lengths = np.random.default_rng(1).integers(3, 60, 200_000)
    result = await asyncio.wait_for(batcher.submit(range(200_000), lengths), 120)
    assert result.results == list(range(200_000))
    await batcher.close()

"""A dynamic batcher that knows no model: it gathers sequences from concurrent requests into
batches and runs them with a given function on worker threads.

- A batch holds at most ``max_batch_size`` sequences and ``max_batch_tokens`` padded tokens
  (longest x count, since the model computes the padding too).
- After the oldest waiting sequence arrived it waits at most ``max_queue_delay_ms`` for more,
  only while more could still fit, and only under concurrent load (the previous batch served
  more than one request), so a lone caller never waits; while every worker is busy it keeps
  gathering, so the next batch forms while one runs.
- The oldest waiting sequence always goes into the next batch (nobody starves); the rest come
  from a bounded window of the oldest, nearest in length first, so padding stays small.
- A request is split into sequences and its results are reassembled in order.
- A cancelled or expired request is dropped from the queue and never computed; a failed batch
  fails only its own callers and the loop goes on.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from bertserve.server.config import BatchSettings
from bertserve.server.errors import DeadlineExceeded, Overloaded, Unavailable

log = logging.getLogger(__name__)


class BatchObserver(Protocol):
    """What the batcher reports (metrics)."""

    def batch_done(
        self, size: int, real_tokens: int, padded_tokens: int, seconds: float
    ) -> None: ...
    def queued(self, seconds: float) -> None: ...
    def dropped(self, reason: str, sequences: int) -> None: ...
    def depth(self, requests: int) -> None: ...


@dataclass
class BatchedResult:
    """The results of one request, in its sequences' order, with where its time went."""

    results: list[Any]
    queue_ns: int
    inference_ns: int
    computed_tokens: int  # padded tokens the model computed for this request's sequences


@dataclass(eq=False)
class _Request:
    future: asyncio.Future
    results: list[Any]
    remaining: int
    queued: int  # sequences not yet taken into a batch
    submitted_ns: int
    deadline: float | None  # loop.time()
    first_start_ns: int | None = None
    inference_ns: int = 0
    computed_tokens: int = 0
    batches: set[int] = field(default_factory=set)

    def dead(self, now: float) -> str | None:
        if self.future.done():
            return "cancelled"
        if self.deadline is not None and now >= self.deadline:
            return "deadline"
        return None


@dataclass(eq=False)
class _Entry:
    request: _Request
    index: int
    payload: Any
    length: int
    arrived: float  # loop.time()


class Batcher:
    """Batches payloads of known token length and runs ``run_batch(payloads) -> results`` on
    ``workers`` threads; ``submit`` awaits one request's results."""

    def __init__(
        self,
        run_batch: Callable[[list[Any]], Sequence[Any]],
        settings: BatchSettings,
        *,
        workers: int = 1,
        name: str = "batcher",
        observer: BatchObserver | None = None,
    ) -> None:
        self._run_batch = run_batch
        self.settings = settings
        self.name = name
        self._observer = observer
        self._workers = workers
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix=f"infer-{name}")
        self._pending: list[_Entry] = []
        self._waiting_requests = 0
        self._free_workers = workers
        self._changed = asyncio.Event()
        self._running: set[asyncio.Task] = set()
        self._batch_ids = itertools.count()
        self._loop_task: asyncio.Task | None = None
        self._closing = False
        self._concurrent_load = False  # the previous batch served more than one request
        self.computed_sequences = 0  # sequences that went through run_batch (for tests)

    def start(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(self._loop(), name=self.name)

    @property
    def queue_depth(self) -> int:
        """Requests that still have sequences waiting."""
        return self._waiting_requests

    async def submit(
        self, payloads: Sequence[Any], lengths: Sequence[int], timeout: float | None = None
    ) -> BatchedResult:
        """Queue one request's sequences and await their results (in order).

        Raises Overloaded when the queue is full, Unavailable while closing, DeadlineExceeded
        when ``timeout`` seconds pass before it is computed, and whatever run_batch raised.
        """
        if self._closing:
            raise Unavailable(f"{self.name}: the server is shutting down; retry on another replica")
        if self._waiting_requests >= self.settings.max_queue_requests:
            raise Overloaded(
                f"{self.name}: queue full ({self.settings.max_queue_requests} requests waiting); "
                "retry later or with backoff"
            )
        if not payloads:
            return BatchedResult([], 0, 0, 0)
        self.start()
        loop = asyncio.get_running_loop()
        now = loop.time()
        request = _Request(
            future=loop.create_future(),
            results=[None] * len(payloads),
            remaining=len(payloads),
            queued=len(payloads),
            submitted_ns=time.monotonic_ns(),
            deadline=None if timeout is None else now + timeout,
        )
        for index, (payload, length) in enumerate(zip(payloads, lengths, strict=True)):
            self._pending.append(_Entry(request, index, payload, int(length), now))
        self._waiting_requests += 1
        self._report_depth()
        self._changed.set()
        try:
            if request.deadline is None:
                await request.future
            else:
                # the loop also drops expired entries; this wakes the caller on time
                await asyncio.wait_for(asyncio.shield(request.future), timeout)
        except TimeoutError:
            request.future.cancel()
            self._changed.set()
            raise DeadlineExceeded(
                f"{self.name}: the deadline passed before the request was computed"
            ) from None
        except asyncio.CancelledError:
            request.future.cancel()  # the loop drops its waiting sequences
            self._changed.set()
            raise
        queue_ns = (request.first_start_ns or request.submitted_ns) - request.submitted_ns
        return BatchedResult(
            request.results, queue_ns, request.inference_ns, request.computed_tokens
        )

    async def close(self, timeout: float | None = None) -> None:
        """Refuse new requests, finish the queued and running ones (within ``timeout``), stop."""
        self._closing = True
        self._changed.set()
        loop = asyncio.get_running_loop()
        end = None if timeout is None else loop.time() + timeout
        while self._pending or self._running:
            if end is not None and loop.time() >= end:
                break
            await asyncio.sleep(0.01)
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        for entry in self._pending:
            if not entry.request.future.done():
                entry.request.future.set_exception(Unavailable(f"{self.name}: shut down"))
        self._pending.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- the loop ---------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            try:
                batch = await self._form_batch()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the loop die
                log.exception("%s: forming a batch failed", self.name)
                await asyncio.sleep(0.01)
                continue
            if not batch:
                continue
            self._free_workers -= 1
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _form_batch(self) -> list[_Entry]:
        loop = asyncio.get_running_loop()
        while True:
            self._drop_dead(loop.time())
            timeout = None
            if self._pending and self._free_workers <= 0:
                # every worker busy: gather, and wake when one frees or a deadline passes
                timeout = self._nearest_deadline(loop.time())
            elif self._pending:
                batch, full = self._select()
                waited = loop.time() - self._pending[0].arrived
                remaining = self.settings.max_queue_delay_ms / 1000 - waited
                waiting_helps = self._concurrent_load and remaining > 0 and not self._closing
                if full or not waiting_helps:
                    self._take(batch)
                    return batch
                timeout = remaining
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout)
            except TimeoutError:
                pass

    def _nearest_deadline(self, now: float) -> float | None:
        deadlines = [e.request.deadline for e in self._pending if e.request.deadline is not None]
        return max(0.0, min(deadlines) - now) if deadlines else None

    def _select(self) -> tuple[list[_Entry], bool]:
        """The next batch from the window, and whether it is full (waiting cannot grow it)."""
        settings = self.settings
        window = self._pending[: settings.length_window]
        oldest = window[0]
        chosen = [oldest]
        longest = oldest.length
        full = len(self._pending) > len(window)
        for entry in sorted(window[1:], key=lambda e: abs(e.length - oldest.length)):
            if len(chosen) >= settings.max_batch_size:
                full = True
                break
            new_longest = max(longest, entry.length)
            if new_longest * (len(chosen) + 1) > settings.max_batch_tokens:
                full = True
                continue
            chosen.append(entry)
            longest = new_longest
        if (
            len(chosen) >= settings.max_batch_size
            or longest * (len(chosen) + 1) > settings.max_batch_tokens
        ):
            full = True
        return chosen, full

    def _take(self, batch: list[_Entry]) -> None:
        taken = set(map(id, batch))
        self._pending = [e for e in self._pending if id(e) not in taken]
        for entry in batch:
            entry.request.queued -= 1
            if entry.request.queued == 0:
                self._waiting_requests -= 1
        self._report_depth()

    def _drop_dead(self, now: float) -> None:
        dead = [e for e in self._pending if e.request.dead(now)]
        if not dead:
            return
        self._take(dead)
        for entry in dead:
            reason = entry.request.dead(now) or "cancelled"
            if reason == "deadline" and not entry.request.future.done():
                entry.request.future.set_exception(
                    DeadlineExceeded(f"{self.name}: the deadline passed while the request waited")
                )
            if self._observer:
                self._observer.dropped(reason, 1)
        log.info(
            "%s: dropped %d waiting sequences of cancelled or expired requests",
            self.name,
            len(dead),
        )

    async def _run(self, batch: list[_Entry]) -> None:
        loop = asyncio.get_running_loop()
        batch_id = next(self._batch_ids)
        self._concurrent_load = len({id(e.request) for e in batch}) > 1
        start_ns = time.monotonic_ns()
        for entry in batch:
            request = entry.request
            if request.first_start_ns is None:
                request.first_start_ns = start_ns
                if self._observer:
                    self._observer.queued((start_ns - request.submitted_ns) / 1e9)
        try:
            results = await loop.run_in_executor(
                self._executor, self._run_batch, [e.payload for e in batch]
            )
            if len(results) != len(batch):
                raise RuntimeError(
                    f"run_batch returned {len(results)} results for {len(batch)} inputs"
                )
        except Exception as error:
            log.exception("%s: a batch of %d sequences failed", self.name, len(batch))
            for entry in batch:
                if not entry.request.future.done():
                    entry.request.future.set_exception(error)
            return
        finally:
            self._free_workers += 1
            self._changed.set()
        elapsed_ns = time.monotonic_ns() - start_ns
        longest = max(e.length for e in batch)
        self.computed_sequences += len(batch)
        if self._observer:
            real = sum(e.length for e in batch)
            self._observer.batch_done(len(batch), real, longest * len(batch), elapsed_ns / 1e9)
        for entry, result in zip(batch, results, strict=True):
            request = entry.request
            if request.future.done():
                continue
            request.results[entry.index] = result
            request.computed_tokens += longest
            if batch_id not in request.batches:
                request.batches.add(batch_id)
                request.inference_ns += elapsed_ns
            request.remaining -= 1
            if request.remaining == 0:
                request.future.set_result(None)

    def _report_depth(self) -> None:
        if self._observer:
            self._observer.depth(self._waiting_requests)

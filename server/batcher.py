"""A dynamic batcher that knows no model: it gathers sequences from concurrent requests into
batches chosen by what they cost, and runs them with a given function on worker threads.

- **Cost-aware.** On a CPU inference time follows computed tokens, padding included, so a
  bigger batch buys little and padding is pure loss; on a GPU each run has a large fixed cost,
  so bigger batches pay. A :class:`CostModel` (fixed cost per batch + cost per padded token,
  growing with length for attention; measured by the server at warm-up) prices a batch, and
  ``plan_batches`` cuts the length-sorted window of waiting sequences into the batches
  that cost least in total: a small dynamic programme (server/plan.py).
- **Fair.** Waiting requests are served round-robin: the request that has waited longest since
  it was last served anchors the next batch (its shortest waiting sequence is in it), and each
  request puts at most its share of the window into a batch. A small request waits about one
  batch behind a big one, never the big one's whole run; nobody starves (the waiting line and
  its windows: server/batch_queue.py; this module dispatches batches and resolves callers).
- **Bounded.** The queue holds at most ``max_queue_requests`` requests,
  ``max_queue_sequences`` sequences and ``max_queue_tokens`` tokens; beyond, RESOURCE_EXHAUSTED.
  Forming a batch looks only at a window of ``length_window`` sequences: a request's sequences
  are sorted once (numpy) when it arrives, so scheduling costs O(log n) per sequence however
  much is queued.
- After the anchor arrived it waits at most ``max_queue_delay_ms`` for more, only while more
  could still join and only under concurrent load (the previous batch served more than one
  request), so a lone caller never waits.
- A request's results are reassembled in its order. A cancelled or expired request leaves the
  queue at once and is never computed; a failed batch fails only its own callers.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from bertserve.server.batch_queue import Entry, Waiting, WaitQueue
from bertserve.server.config import BatchSettings
from bertserve.server.errors import DeadlineExceeded, InvalidArgument, Overloaded, Unavailable
from bertserve.server.plan import CostModel

__all__ = ["BatchObserver", "BatchedResult", "Batcher", "CostModel"]

log = logging.getLogger(__name__)


class BatchObserver(Protocol):
    """What the batcher reports (metrics)."""

    def batch_done(
        self, size: int, real_tokens: int, padded_tokens: int, seconds: float
    ) -> None: ...
    def queued(self, seconds: float) -> None: ...
    def dropped(self, reason: str, sequences: int) -> None: ...
    def depth(self, requests: int, sequences: int, tokens: int) -> None: ...


@dataclass
class BatchedResult:
    """The results of one request, in its sequences' order, with where its time went."""

    results: list[Any]
    queue_ns: int
    inference_ns: int
    computed_tokens: int  # padded tokens the model computed for this request's sequences


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
        cost: CostModel | None = None,
    ) -> None:
        self._run_batch = run_batch
        self.settings = settings
        self.cost = cost or CostModel()
        self.name = name
        self._observer = observer
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix=f"infer-{name}")
        self._queue = WaitQueue(settings, name)
        self._free_workers = workers
        # what the batcher loop's task awaits while nothing can be dispatched (see _wake)
        self._waiter: asyncio.Future | None = None
        # batches handed to a worker and not yet finished on the loop
        self._running: set[tuple[Entry, ...]] = set()
        self._event_loop: asyncio.AbstractEventLoop | None = None
        self._soon = False  # a _dispatch_soon is scheduled
        self._batch_ids = itertools.count()
        self._loop_task: asyncio.Task | None = None
        self._closing = False
        self._concurrent_load = False  # the previous batch served more than one request

    def start(self) -> None:
        if self._loop_task is None:
            self._event_loop = asyncio.get_running_loop()
            self._loop_task = self._event_loop.create_task(self._loop(), name=self.name)

    def admit(self, count: int, tokens: int = 0) -> None:
        """Raise unless a request of ``count`` sequences and ``tokens`` tokens may queue now
        (callers check before tokenizing; ``submit`` checks again with the tokens)."""
        settings = self.settings
        if self._closing:
            raise Unavailable(f"{self.name}: the server is shutting down; retry on another replica")
        for what, size, limit in (
            ("sequences", count, settings.max_queue_sequences),
            ("tokens", tokens, settings.max_queue_tokens),
        ):
            if size > limit:
                raise InvalidArgument(
                    f"{count} sequences of {tokens} tokens in one request: more {what} than "
                    f"{self.name} queues at once ({limit:,}); send at most that many per request, "
                    "e.g. split it over EmbedStream"
                )
        full = (
            (
                len(self._queue) >= settings.max_queue_requests,
                "requests",
                settings.max_queue_requests,
            ),
            (
                self._queue.sequences + count > settings.max_queue_sequences,
                "sequences",
                settings.max_queue_sequences,
            ),
            (
                self._queue.tokens + tokens > settings.max_queue_tokens,
                "tokens",
                settings.max_queue_tokens,
            ),
        )
        for over, what, limit in full:
            if over:
                raise Overloaded(
                    f"{self.name}: queue full (at most {limit:,} {what} wait); retry later with "
                    "backoff, or on another replica"
                )

    async def submit(
        self, payloads: Sequence[Any], lengths: Sequence[int], timeout: float | None = None
    ) -> BatchedResult:
        """Queue one request's sequences and await their results (in order).

        Raises Overloaded when the queue is full, InvalidArgument when the request alone is
        larger than the queue, Unavailable while closing, DeadlineExceeded when ``timeout``
        seconds pass before it is computed, and whatever run_batch raised.
        """
        sizes = np.asarray(lengths, dtype=np.int64)
        if sizes.shape != (len(payloads),):
            raise ValueError(f"{len(payloads)} payloads but {sizes.shape} lengths")
        tokens = int(sizes.sum())
        self.admit(len(payloads), tokens)
        if not payloads:
            return BatchedResult([], 0, 0, 0)
        self.start()
        loop = asyncio.get_running_loop()
        now = loop.time()
        request = Waiting(
            future=loop.create_future(),
            payloads=payloads,
            lengths=sizes,
            order=np.argsort(sizes, kind="stable"),
            arrived=now,
            submitted_ns=time.monotonic_ns(),
            results=[None] * len(payloads),
            remaining=len(payloads),
            waiting=len(payloads),
            waiting_tokens=tokens,
        )
        self._queue.add(request)
        self._report_depth()
        if self._free_workers > 0 and not self._concurrent_load:
            # a worker is idle and nobody queues behind a batch: dispatch at the end of this
            # loop iteration, without waking the batcher loop's task (a task step and a timer)
            if not self._soon:
                self._soon = True
                loop.call_soon(self._dispatch_soon)
        else:
            self._wake()
        # a timer, not wait_for: no task per request, and the queue is left the moment it fires
        timer = None if timeout is None else loop.call_later(timeout, self._expire, request)
        try:
            await request.future
        except DeadlineExceeded:
            raise
        except BaseException:
            # cancelled, or one of its batches failed: what still waits is never computed
            self._discard(request, "cancelled")
            raise
        finally:
            if timer is not None:
                timer.cancel()
        queue_ns = (request.first_start_ns or request.submitted_ns) - request.submitted_ns
        return BatchedResult(
            request.results, queue_ns, request.inference_ns, request.computed_tokens
        )

    def _expire(self, request: Waiting) -> None:
        if not request.future.done():
            request.future.set_exception(
                DeadlineExceeded(
                    f"{self.name}: the deadline passed before the request was computed"
                )
            )
            self._discard(request, "deadline")

    def _discard(self, request: Waiting, reason: str) -> None:
        """A request whose caller left: its waiting sequences leave the queue uncomputed."""
        if not request.future.done():
            request.future.cancel()
        if request in self._queue:
            dropped = self._queue.remove(request)
            if self._observer:
                self._observer.dropped(reason, dropped)
            log.info("%s: dropped %d waiting sequences (%s)", self.name, dropped, reason)
            self._report_depth()
            self._wake()

    async def close(self, timeout: float | None = None) -> None:
        """Refuse new requests, finish the queued and running ones (within ``timeout``), stop."""
        self._closing = True
        self._wake()
        loop = asyncio.get_running_loop()
        end = None if timeout is None else loop.time() + timeout
        while self._queue or self._running:
            if end is not None and loop.time() >= end:
                break
            await asyncio.sleep(0.01)
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        for request in self._queue:
            if not request.future.done():
                request.future.set_exception(Unavailable(f"{self.name}: shut down"))
        self._queue.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)
        for batch in self._running:  # still computing past the timeout: its callers leave now
            for entry in batch:
                if not entry.request.future.done():
                    entry.request.future.set_exception(Unavailable(f"{self.name}: shut down"))
        self._running.clear()

    # -- the loop ---------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            try:
                timeout = self._dispatch_ready()
            except Exception:  # never let the loop die
                log.exception("%s: forming a batch failed", self.name)
                timeout = 0.01
            # a bare future and a timer: asyncio.wait_for(event.wait()) made a task and a
            # timeout context on every wake, and under load it wakes on every request
            loop = asyncio.get_running_loop()
            self._waiter = loop.create_future()
            timer = None if timeout is None else loop.call_later(timeout, self._wake)
            try:
                await self._waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()

    def _wake(self) -> None:
        """Something changed (a request came or left, a worker freed, closing): the loop's
        task looks again."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _dispatch_ready(self) -> float | None:
        """Dispatch batches while a worker is free and one is ready; returns how long to wait
        for the anchor's batch to fill (None: wait for a change)."""
        loop = self._event_loop
        assert loop is not None
        while self._queue and self._free_workers > 0:
            anchor = self._queue.anchor
            batch, full, peeked = self._queue.select(self.cost)
            remaining = self.settings.max_queue_delay_ms / 1000 - (loop.time() - anchor.arrived)
            waiting_helps = self._concurrent_load and remaining > 0 and not self._closing
            if not full and waiting_helps:
                return remaining
            self._queue.take(batch, peeked)
            self._report_depth()
            self._dispatch(batch)
        return None

    def _dispatch_soon(self) -> None:
        """The lone-caller path: run by call_soon after the submits of this loop iteration, so
        requests that arrived together still share a batch."""
        self._soon = False
        try:
            if self._dispatch_ready() is not None:
                self._wake()  # waiting helps: the batcher loop keeps the time
        except Exception:
            log.exception("%s: forming a batch failed", self.name)
            self._wake()

    def _dispatch(self, batch: list[Entry]) -> None:
        """Hand ``batch`` to a worker thread; the worker runs it and posts the results back in
        one hop (no task, no chained futures: a single loop callback resolves the callers)."""
        self._free_workers -= 1
        self._concurrent_load = len({id(e.request) for e in batch}) > 1 or bool(self._queue)
        start_ns = time.monotonic_ns()
        for entry in batch:
            request = entry.request
            if request.first_start_ns is None:
                request.first_start_ns = start_ns
                if self._observer:
                    self._observer.queued((start_ns - request.submitted_ns) / 1e9)
        key = tuple(batch)
        self._running.add(key)
        payloads = [e.request.payloads[e.index] for e in batch]
        try:
            self._executor.submit(self._work, key, payloads, start_ns)
        except RuntimeError as error:  # the executor was shut down (closing)
            self._finish(key, None, error, start_ns)

    def _work(self, batch: tuple[Entry, ...], payloads: list[Any], start_ns: int) -> None:
        """On a worker thread: run the batch, then post the outcome to the event loop."""
        results: Sequence[Any] | None = None
        error: BaseException | None = None
        try:
            results = self._run_batch(payloads)
            if len(results) != len(batch):
                raise RuntimeError(
                    f"run_batch returned {len(results)} results for {len(batch)} inputs"
                )
        except Exception as failure:
            results, error = None, failure
        assert self._event_loop is not None
        try:
            self._event_loop.call_soon_threadsafe(self._finish, batch, results, error, start_ns)
        except RuntimeError:  # the loop is closed: nobody is left to answer
            pass

    def _finish(
        self,
        batch: tuple[Entry, ...],
        results: Sequence[Any] | None,
        error: BaseException | None,
        start_ns: int,
    ) -> None:
        """On the loop: free the worker and resolve the batch's callers."""
        if batch not in self._running:
            return  # closed meanwhile: its callers were already answered
        self._running.discard(batch)
        self._free_workers += 1
        if self._queue:  # someone waits for this worker (else the loop's task sleeps on)
            self._wake()
        if results is None:
            failure = error or RuntimeError("run_batch returned nothing")
            log.error("%s: a batch of %d sequences failed", self.name, len(batch), exc_info=failure)
            for entry in batch:
                if not entry.request.future.done():
                    entry.request.future.set_exception(failure)
            return
        batch_id = next(self._batch_ids)
        elapsed_ns = time.monotonic_ns() - start_ns
        longest = batch[-1].length
        if self._observer:
            real = sum(e.length for e in batch)
            self._observer.batch_done(len(batch), real, longest * len(batch), elapsed_ns / 1e9)
        for entry, result in zip(batch, results, strict=True):
            request = entry.request
            if request.future.done():
                continue
            request.deliver(entry.index, result, batch_id, elapsed_ns, longest)

    def _report_depth(self) -> None:
        if self._observer:
            self._observer.depth(len(self._queue), self._queue.sequences, self._queue.tokens)

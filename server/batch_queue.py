"""The batcher's waiting line: who waits, in which order they are served, and which waiting
sequences make the next batch (the cut itself is server/plan.py's). No threads, no event loop:
server/batcher.py owns both and calls in here."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from bertserve.server.config import BatchSettings
from bertserve.server.plan import CostModel, plan_batches

log = logging.getLogger("bertserve.server.batcher")


@dataclass(eq=False)
class Waiting:
    """One caller's sequences; those still waiting are ``front`` then ``order[cursor:]``,
    shortest first."""

    future: asyncio.Future
    payloads: Sequence[Any]
    lengths: np.ndarray
    order: np.ndarray  # indices by length, shortest first (stable)
    arrived: float  # loop.time()
    submitted_ns: int
    results: list[Any]
    remaining: int  # sequences without a result yet
    waiting: int  # sequences not yet taken into a batch
    waiting_tokens: int
    cursor: int = 0
    front: list[int] = field(default_factory=list)  # seen by a window, not taken
    first_start_ns: int | None = None
    inference_ns: int = 0
    computed_tokens: int = 0
    batches: set[int] = field(default_factory=set)

    def peek(self, count: int) -> list[int]:
        """The ``count`` shortest waiting sequences (indices)."""
        more = max(0, count - len(self.front))
        return self.front[:count] + self.order[self.cursor : self.cursor + more].tolist()

    def take(self, peeked: list[int], taken: set[int]) -> None:
        """``taken`` of the ``peeked`` sequences went into a batch; the rest stay in front."""
        from_order = len(peeked) - len(self.front[: len(peeked)])
        self.front = [i for i in peeked if i not in taken] + self.front[len(peeked) :]
        self.cursor += from_order
        self.waiting -= len(taken)
        self.waiting_tokens -= int(sum(int(self.lengths[i]) for i in taken))

    def deliver(self, index: int, result: Any, batch_id: int, elapsed_ns: int, padded: int) -> None:
        """One of its sequences came back from batch ``batch_id``; the last one resolves it."""
        self.results[index] = result
        self.computed_tokens += padded
        if batch_id not in self.batches:
            self.batches.add(batch_id)
            self.inference_ns += elapsed_ns
        self.remaining -= 1
        if self.remaining == 0:
            self.future.set_result(None)


@dataclass(eq=False)
class Entry:
    """One waiting sequence: whose, which, how long."""

    request: Waiting
    index: int
    length: int


Window = dict[Waiting, list[int]]


class WaitQueue:
    """Waiting requests in service order (the first anchors the next batch) and their totals."""

    def __init__(self, settings: BatchSettings, name: str) -> None:
        self.settings = settings
        self.name = name
        self._requests: dict[Waiting, None] = {}  # dicts keep order
        self.sequences = 0
        self.tokens = 0

    def __len__(self) -> int:
        return len(self._requests)

    def __contains__(self, request: Waiting) -> bool:
        return request in self._requests

    def __iter__(self):
        return iter(list(self._requests))

    @property
    def anchor(self) -> Waiting:
        return next(iter(self._requests))

    def add(self, request: Waiting) -> None:
        self._requests[request] = None
        self.sequences += request.waiting
        self.tokens += request.waiting_tokens

    def remove(self, request: Waiting) -> int:
        """Take ``request`` out with what it still had waiting; returns that many sequences."""
        del self._requests[request]
        self.sequences -= request.waiting
        self.tokens -= request.waiting_tokens
        dropped = request.waiting
        request.waiting = request.waiting_tokens = 0
        return dropped

    def clear(self) -> None:
        self._requests.clear()
        self.sequences = self.tokens = 0

    def window(self) -> Window:
        """Each waiting request's share of the window, in service order: its shortest
        waiting sequences."""
        size = self.settings.length_window
        share = max(1, size // len(self._requests))
        counts: dict[Waiting, int] = {}
        room = size
        for request in self._requests:
            counts[request] = take = min(request.waiting, share, room)
            room -= take
            if room == 0:
                break
        if room:  # what the small requests left over goes to the big ones, in order
            for request in counts:
                extra = min(request.waiting - counts[request], room)
                counts[request] += extra
                room -= extra
                if room == 0:
                    break
        return {request: request.peek(count) for request, count in counts.items()}

    def select(self, cost: CostModel) -> tuple[list[Entry], bool, Window]:
        """The next batch as ``cost`` prices it, whether it is full (waiting cannot grow it),
        and the window."""
        settings = self.settings
        peeked = self.window()
        # the anchor's shortest waiting sequence sorts first among equal lengths
        window = [
            Entry(request, index, int(request.lengths[index]))
            for request, indices in peeked.items()
            for index in indices
        ]
        window.sort(key=lambda entry: entry.length)  # stable: service order breaks ties
        lengths = [entry.length for entry in window]
        ends = plan_batches(lengths, cost, settings.max_batch_size, settings.max_batch_tokens)
        anchor = next(iter(peeked))
        anchor_index = next(i for i, e in enumerate(window) if e.request is anchor)
        begin = 0
        for end in ends:
            if anchor_index < end:
                break
            begin = end
        batch = window[begin:end]
        longest = batch[-1].length
        full = (
            len(batch) >= settings.max_batch_size
            or (len(batch) + 1) * longest > settings.max_batch_tokens
            or self.sequences > len(window)
        )
        if log.isEnabledFor(logging.DEBUG):
            real = sum(lengths[begin:end])
            log.debug(
                "%s: batch of %d x %d (padding %.3f, est. %.1f ms) from a window of %d "
                "sequences of %d requests cut into %d batches; %d sequences queued; cost: %s",
                self.name,
                len(batch),
                longest,
                len(batch) * longest / max(real, 1),
                cost.seconds(len(batch), longest) * 1e3,
                len(window),
                len(peeked),
                len(ends),
                self.sequences,
                cost.describe(),
            )
        return batch, full, peeked

    def take(self, batch: list[Entry], peeked: Window) -> None:
        """``batch`` leaves the queue; its requests that still wait go to the back of the line."""
        taken: dict[Waiting, set[int]] = {}
        for entry in batch:
            taken.setdefault(entry.request, set()).add(entry.index)
        for request, indices in taken.items():
            request.take(peeked[request], indices)
            del self._requests[request]
            if request.waiting:
                self._requests[request] = None  # served: to the back of the line
        self.sequences -= len(batch)
        self.tokens -= sum(entry.length for entry in batch)

"""Bidirectional streams of requests, bounded both ways, knowing no protocol."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from bertserve.server import metrics
from bertserve.server.core.engine import SHUTTING_DOWN, Admit, Engine
from bertserve.server.errors import AnswerTooLarge, InvalidArgument, Unavailable

# Requests one stream works on at once; the stream's reader waits beyond it (backpressure).
STREAM_CONCURRENCY = 64


class StreamBuffer:
    """Bytes of computed-but-unsent answers one stream holds, bounded.

    ``reserve(n)`` waits until ``n`` more bytes fit (a caller that stops reading stops its
    stream's computing); ``release(n)`` once the answer is handed over; ``close()`` when the
    stream ends with answers never sent.
    """

    def __init__(self, capacity: int, max_answer: int) -> None:
        self.capacity = capacity
        self.max_answer = max_answer
        self.held = 0
        self._freed = asyncio.Condition()

    async def reserve(self, size: int) -> None:
        if size > self.max_answer:
            raise AnswerTooLarge(
                f"the answer would be {size / 2**20:.1f} MiB, over this server's limit of "
                f"{self.max_answer / 2**20:.1f} MiB per answer (max_answer_bytes); ask for "
                "fewer outputs (layers, token embeddings) or send fewer sequences per request"
            )
        async with self._freed:
            await self._freed.wait_for(lambda: self.held + size <= self.capacity)
            self.held += size
        metrics.STREAM_BUFFERED.inc(size)

    async def release(self, size: int) -> None:
        async with self._freed:
            self.held -= size
            self._freed.notify_all()
        metrics.STREAM_BUFFERED.dec(size)

    def close(self) -> None:
        metrics.STREAM_BUFFERED.dec(self.held)
        self.held = 0


async def run_stream(
    engine: Engine,
    requests: AsyncIterator[Any],
    buffer: StreamBuffer,
    work: Callable[[Any, Admit], Awaitable[list[Any]]],
    failed: Callable[[Any, Exception], list[Any]],
    done: Callable[[Any, BaseException | None, float], None],
    key: Callable[[Any], str] | None = None,
) -> AsyncIterator[Any]:
    """Each request answered as it completes by the messages ``work(request, admit)``
    returns, or by ``failed(request, error)``; ``done(request, error, seconds)`` records it.

    Bounded both ways: at most STREAM_CONCURRENCY requests read and not yet sent, and at most
    ``buffer.capacity`` bytes of answers computed and not yet sent (``admit`` waits for room
    before a request is computed). A slot and its bytes free only when the answer has been
    handed over, so a caller that stops reading stops its stream's work. ``key``: requests
    whose key is already in flight are refused (their answers could not be told apart).
    """
    answers: asyncio.Queue[tuple[list[Any], int] | None] = asyncio.Queue()
    slots = asyncio.Semaphore(STREAM_CONCURRENCY)
    tasks: set[asyncio.Task] = set()
    in_flight: set[str] = set()
    loop = asyncio.get_running_loop()

    async def answer(request: Any) -> None:
        started = loop.time()
        reserved = 0
        error: BaseException | None = None
        name = key(request) if key else ""  # "" is never refused as a duplicate

        async def admit(size: int) -> None:
            nonlocal reserved
            await buffer.reserve(size)
            reserved = size

        try:
            if engine.draining:
                raise Unavailable(SHUTTING_DOWN)
            if name and name in in_flight:
                raise InvalidArgument(
                    f"={name!r}: a request with this id is already in flight on this stream; "
                    "allowed: an id not in flight",
                    ("id",),
                )
            if name:
                in_flight.add(name)
            try:
                responses = await work(request, admit)
            finally:
                in_flight.discard(name)
        except Exception as caught:
            error = caught
            if reserved:
                await buffer.release(reserved)
                reserved = 0
            responses = failed(request, caught)
        finally:
            done(request, error, loop.time() - started)
        answers.put_nowait((responses, reserved))

    async def read() -> None:
        try:
            async for request in requests:
                await slots.acquire()
                task = asyncio.create_task(answer(request))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            while tasks:
                await asyncio.gather(*list(tasks), return_exceptions=True)
        finally:
            answers.put_nowait(None)

    reader = asyncio.create_task(read())
    try:
        while (item := await answers.get()) is not None:
            chunks, reserved = item
            try:
                for chunk in chunks:
                    yield chunk
            finally:
                slots.release()
                if reserved:
                    await buffer.release(reserved)
        await reader
    finally:
        reader.cancel()
        for task in list(tasks):
            task.cancel()
        buffer.close()

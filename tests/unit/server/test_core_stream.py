"""The stream machinery of the core, with plain work functions: no model, no gRPC."""

from __future__ import annotations

import asyncio

import pytest
from bertserve.server.core.engine import Engine
from bertserve.server.core.stream import StreamBuffer, run_stream
from bertserve.server.errors import AnswerTooLarge


async def collect(requests: list[str], release: asyncio.Event) -> list[tuple[str, str]]:
    async def source():
        for request in requests:
            yield request

    async def work(request: str, admit) -> list[tuple[str, str]]:
        await admit(10)
        await release.wait()
        return [(request, "ok")]

    def failed(request: str, error: Exception) -> list[tuple[str, str]]:
        return [(request, error.render())]

    done: list[str] = []
    answers = []
    stream = run_stream(
        Engine(None, 100),
        source(),
        StreamBuffer(1000, 100),
        work,
        failed,
        lambda request, error, seconds: done.append(request),
        key=lambda request: request,
    )
    async for answer in stream:
        answers.append(answer)
        release.set()
    assert sorted(done) == sorted(requests)
    return answers


async def test_an_id_already_in_flight_is_refused_and_the_stream_goes_on():
    answers = await collect(["a", "a", "b"], asyncio.Event())
    assert answers[0] == (
        "a",
        "id='a': a request with this id is already in flight on this "
        "stream; allowed: an id not in flight",
    )
    assert sorted(answers[1:]) == [("a", "ok"), ("b", "ok")]


async def test_ids_may_repeat_once_answered():
    release = asyncio.Event()
    release.set()
    answers = await collect(["a", "a"], release)
    assert answers == [("a", "ok"), ("a", "ok")]


async def test_the_buffer_refuses_an_answer_over_the_limit_and_frees_room_on_release():
    buffer = StreamBuffer(capacity=100, max_answer=80)
    with pytest.raises(AnswerTooLarge):
        await buffer.reserve(81)
    await buffer.reserve(80)
    waiting = asyncio.create_task(buffer.reserve(30))  # 80 + 30 > 100: waits for a release
    await buffer.release(80)
    await waiting
    assert buffer.held == 30
    buffer.close()

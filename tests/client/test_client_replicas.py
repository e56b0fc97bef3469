"""Three server processes behind one round-robin client; one is killed mid-load: nothing is lost."""

from __future__ import annotations

import asyncio
import os
import signal

import numpy as np
import pytest
from bertserve.client import AsyncClient, Client
from servers import start_server

# Under what one connection may hold (a unary call past its share borrows spare slots, up to
# max_concurrent_rpcs less one share): ~400 per replica, ~600 per survivor after the kill.
REQUESTS = 1200
WORDS = ("red", "green", "blue", "black", "white")


def text(i: int) -> str:
    return " ".join(WORDS[: i % 5 + 1]) + f" number {i}"


@pytest.fixture
def replicas(model_repo):
    started = []
    try:
        for _ in range(3):
            # one variant everywhere, so the answers compare whichever replica gave them
            started.append(start_server(model_repo, "--variant", "minilm=fp32-opt", metrics=False))
        yield started
    finally:
        for server in started:
            server.stop()


def test_a_killed_replica_loses_no_request(replicas):
    targets = ",".join(server.target for server in replicas)
    victim = replicas[1].process

    async def load():
        async with AsyncClient(targets, timeout=120) as client:
            # every replica connected and warm before the load starts
            await asyncio.gather(*(client.embed([f"warm {i}"]) for i in range(30)))
            finished = 0

            async def one(i: int):
                nonlocal finished
                result = await client.embed([text(i)])
                finished += 1
                return result

            tasks = [asyncio.ensure_future(one(i)) for i in range(REQUESTS)]
            while finished < REQUESTS // 10:
                await asyncio.sleep(0.002)
            os.kill(victim.pid, signal.SIGKILL)
            at_kill = finished
            results = await asyncio.gather(*tasks)  # one exception fails the test
            return at_kill, results

    at_kill, results = asyncio.run(asyncio.wait_for(load(), 600))
    assert victim.wait(10) == -signal.SIGKILL
    assert at_kill < REQUESTS, "the replica died after the load had finished"
    assert len(results) == REQUESTS
    # each answer is its own request's: token counts follow the inputs, vectors match
    assert [int(r.lengths[0]) for r in results[:10]] == [i % 5 + 1 + 4 for i in range(10)]
    survivor = replicas[0].target
    with Client(survivor, timeout=120) as client:
        sample = list(range(0, REQUESTS, 97))
        expected = client.embed([text(i) for i in sample]).sentence_embedding
        lengths = client.embed([text(i) for i in range(REQUESTS)]).lengths
    assert [int(r.lengths[0]) for r in results] == lengths.tolist()
    got = np.stack([results[i].sentence_embedding[0] for i in sample])
    np.testing.assert_allclose(got, expected, atol=3e-5)

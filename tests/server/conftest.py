"""In-process servers for the server tests (the subprocess one is ``live_server``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from bertserve.server.config import BatchSettings
from server_helpers import start_in_process


@pytest.fixture(scope="session")
async def in_process(model_repo: Path):
    """A server in this process on a free port, with a grpc.aio stub (batches up to 8 sequences
    and 2 ms of waiting, so concurrent tests share batches); fp32-opt by default, so answers
    can be compared with a direct run of that model."""
    running = await start_in_process(
        model_repo, batch=BatchSettings(max_batch_size=8), variants={"minilm": "fp32-opt"}
    )
    yield running
    await running.channel.close()
    await running.server.stop(1)

"""Which variant a model serves by default: int8 only where it passed validation and ran
faster at load on this CPU, and ModelInfo says why."""

from __future__ import annotations

import json

import pytest
from bertserve.v1 import bertserve_pb2 as pb
from server_helpers import start_in_process
from servers import link_package


async def model_info(running) -> pb.ModelInfo:
    return (await running.stub.ModelInfo(pb.ModelInfoRequest())).model


async def stopped(running) -> None:
    await running.channel.close()
    await running.server.stop(0)


async def test_int8_is_the_default_only_where_it_measured_faster_at_load(model_repo):
    running = await start_in_process(model_repo)
    try:
        info = await model_info(running)
        registry = running.server.registry
        fp32 = registry.loaded[("minilm", "fp32-opt")]
        int8 = registry.loaded[("minilm", "int8")]
        speedup = fp32.measured_seconds / int8.measured_seconds
        assert info.default_variant == ("int8" if speedup >= 1.05 else "fp32-opt")
        reason = info.default_variant_reason
        assert reason.startswith(f"{info.default_variant}:")
        assert "measured at load on this CPU" in reason and f"{speedup:.2f}x" in reason
        assert {v.name for v in info.variants if v.loaded} == {"fp32-opt", "int8"}
        # each variant's batch cost was fitted from its own warm-up batches
        assert fp32.batcher.cost != int8.batcher.cost
        assert fp32.batcher.cost.per_token_s > 0
        answer = await running.stub.Embed(pb.EmbedRequest(texts=["I love Paris"]))
        assert answer.variant == info.default_variant
        asked = await running.stub.Embed(pb.EmbedRequest(texts=["x"], variant="fp32-opt"))
        assert asked.variant == "fp32-opt"  # a request can still name its variant
    finally:
        await stopped(running)


@pytest.fixture
def repo_with_flagged_int8(model_repo, tmp_path):
    """The test repository with int8's validation marked as failed (model files linked)."""
    for variant in ("fp32-opt", "int8"):
        link_package(model_repo / "minilm" / variant, tmp_path / "minilm" / variant)
    manifest = tmp_path / "minilm" / "int8" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["validation"]["cosine"]["mean"] = 0.95
    data["validation"]["flagged"] = True
    manifest.write_text(json.dumps(data))
    return tmp_path


async def test_int8_that_failed_validation_is_never_the_default(repo_with_flagged_int8):
    running = await start_in_process(repo_with_flagged_int8)
    try:
        info = await model_info(running)
        assert info.default_variant == "fp32-opt"
        assert "int8 failed validation (worst mean-pooled cosine 0.9500" in (
            info.default_variant_reason
        )
        assert not next(v for v in info.variants if v.name == "int8").loaded
    finally:
        await stopped(running)


async def test_a_configured_variant_is_kept_and_said_so(model_repo):
    running = await start_in_process(model_repo, variants={"minilm": "int8"}, warmup=False)
    try:
        info = await model_info(running)
        assert info.default_variant == "int8"
        assert info.default_variant_reason == "configured (variants.minilm: int8)"
    finally:
        await stopped(running)

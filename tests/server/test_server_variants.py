"""Which variant a model serves by default: the device's default unless configured, never the
one that ran fastest at load, and ModelInfo says why."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from bertserve.server.batcher import CostModel
from bertserve.v1 import bertserve_pb2 as pb
from server_helpers import assemble, start_in_process
from servers import link_package

# Held out from the export's validation texts: one word, two words, numbers, a URL, code,
# emoji, non-Latin scripts, and long texts to share their batches with.
HELD_OUT = [
    "yes",
    "Bonjour",
    "many thanks",
    "1987",
    "www.python.org/downloads",
    "x = [i * i for i in range(3)]",
    "👋🙂",
    "こんにちは",
    "Добрый вечер",
    "مساء الخير",
    "감사합니다",
]
LONG = [
    "The river had risen for three days, and by the fourth morning the lower streets of the "
    "town were under water, the bakery closed, the school turned into a shelter, and the "
    "mayor, who had promised that the new embankment would hold, stood on the bridge and "
    "watched the boats go by without saying a word to anyone.",
    "Our quarterly report shows revenue growth of twelve percent, driven by the new "
    "subscription plans in Europe and Asia, while costs rose less than expected because the "
    "data centre migration finished two months ahead of schedule.",
]


async def model_info(running) -> pb.ModelInfo:
    return (await running.stub.ModelInfo(pb.ModelInfoRequest())).model


async def stopped(running) -> None:
    await running.channel.close()
    await running.server.stop(0)


def _passing_validation(manifest_path: Path) -> None:
    """Give an int8 package a validation record that meets both thresholds, so nothing but the
    rule itself could keep it from the default."""
    manifest = json.loads(manifest_path.read_text())
    validation = manifest["validation"]
    validation.update(ran=True, passed=True, flagged=False, validated=True)
    validation["cosine"]["mean"] = 0.999
    validation["batch_invariance"] = {"max_abs": 1e-6, "text": "ok"}
    manifest_path.write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def repo_with_fast_int8(model_repo, tmp_path_factory) -> Path:
    """MiniLM's fp32-opt beside an int8 that is genuinely much faster (a 2-layer bert-tiny with
    128 hidden units, quantized): any rule that times the variants at load would pick int8."""
    from bertserve.export import export_model

    tiny_repo = tmp_path_factory.mktemp("tiny")
    export_model(repo=tiny_repo, config="bert-tiny", variants=["int8"], progress=False)
    repo = tmp_path_factory.mktemp("fast-int8")
    link_package(model_repo / "minilm" / "fp32-opt", repo / "minilm" / "fp32-opt")
    link_package(tiny_repo / "bert-tiny" / "int8", repo / "minilm" / "int8")
    _passing_validation(repo / "minilm" / "int8" / "manifest.json")
    return repo


async def test_the_default_is_fp32_opt_even_where_int8_measures_faster(repo_with_fast_int8):
    for start in range(2):  # two starts of the same machine give the same answer
        running = await start_in_process(repo_with_fast_int8)
        try:
            info = await model_info(running)
            assert info.default_variant == "fp32-opt", start
            reason = info.default_variant_reason
            assert reason.startswith("fp32-opt: the CPU default; int8 serves only when configured")
            assert "passed validation" in reason  # a validated int8 is still not the default
            assert "x the speed" not in reason and "measured" not in reason
            registry = running.server.registry
            assert set(registry.loaded) == {("minilm", "fp32-opt")}  # int8 is not loaded at start
            first = await running.stub.Embed(pb.EmbedRequest(texts=["ok"]))
            assert first.variant == "fp32-opt"
            # int8 loads when a request names it, and its warm-up shows it faster
            asked = await running.stub.Embed(pb.EmbedRequest(texts=["ok"], variant="int8"))
            assert asked.variant == "int8"
            fp32 = registry.loaded[("minilm", "fp32-opt")]
            int8 = registry.loaded[("minilm", "int8")]
            int8_seconds = sum(seconds for *_, seconds in int8.cost_samples)
            fp32_seconds = sum(seconds for *_, seconds in fp32.cost_samples)
            assert int8_seconds < fp32_seconds  # the premise: int8 did measure faster
            after = await running.stub.Embed(pb.EmbedRequest(texts=["ok"]))
            assert after.variant == "fp32-opt" and (await model_info(running)).default_variant == (
                "fp32-opt"
            )
        finally:
            await stopped(running)


async def test_a_configured_int8_is_the_default_and_said_so(repo_with_fast_int8):
    running = await start_in_process(repo_with_fast_int8, variants={"minilm": "int8"})
    try:
        info = await model_info(running)
        assert info.default_variant == "int8"
        assert info.default_variant_reason == "configured (variants.minilm: int8)"
        assert (await running.stub.Embed(pb.EmbedRequest(texts=["ok"]))).variant == "int8"
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


async def test_the_reason_names_an_int8_that_failed_validation(repo_with_flagged_int8):
    running = await start_in_process(repo_with_flagged_int8)
    try:
        info = await model_info(running)
        assert info.default_variant == "fp32-opt"
        assert "int8 serves only when configured" in info.default_variant_reason
        assert "failed validation (worst mean-pooled cosine 0.9500" in info.default_variant_reason
        assert not next(v for v in info.variants if v.name == "int8").loaded
    finally:
        await stopped(running)


async def _mean_vectors(running, texts: list[str]) -> tuple[np.ndarray, pb.EmbedResponse]:
    answer = await running.stub.Embed(
        pb.EmbedRequest(texts=texts, pooling=pb.POOLING_MEAN, normalize=True)
    )
    return assemble([answer])["sentence_embedding"], answer


async def test_default_vectors_do_not_move_alone_batched_or_after_a_restart(model_repo):
    """With no variant pinned, each held-out text gets one vector: alone, inside a batch of
    mixed and long texts, and from a restarted server."""
    mixed = [text for pair in zip(HELD_OUT, LONG * len(HELD_OUT), strict=False) for text in pair]
    runs = []
    for _ in range(2):
        running = await start_in_process(model_repo)
        try:
            assert (await model_info(running)).default_variant == "fp32-opt"
            # a GPU-like cost (a large fixed cost per batch) makes the batcher put short and
            # long texts together, where the CPU's fitted cost keeps lengths apart
            loaded = running.server.registry.loaded[("minilm", "fp32-opt")]
            loaded.batcher.cost = CostModel(overhead_s=1.0, per_token_s=1e-9)
            alone = np.concatenate([(await _mean_vectors(running, [t]))[0] for t in HELD_OUT])
            batched, answer = await _mean_vectors(running, mixed)
            assert answer.variant == "fp32-opt"
            # padding was computed: the short texts shared batches with longer ones
            assert answer.timing.computed_tokens > answer.timing.tokens
            batched = batched[[mixed.index(t) for t in HELD_OUT]]
            assert np.abs(alone - batched).max() <= 1e-5
            runs.append(alone)
        finally:
            await stopped(running)
    assert np.abs(runs[0] - runs[1]).max() <= 1e-5

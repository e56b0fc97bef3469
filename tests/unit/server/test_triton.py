"""server/triton.py and server/statistics.py without a model: the two v2 names of a model,
Triton's version numbers, ModelConfig from batch settings, statistics, the index, and the
Triton-only parameters the v2 codec ignores."""

from __future__ import annotations

from pathlib import Path

import pytest
from bertserve.inference import grpc_service_pb2 as v2
from bertserve.inference import model_config_pb2 as mc
from bertserve.server import triton
from bertserve.server.config import BatchSettings, ServerConfig
from bertserve.server.errors import InvalidArgument
from bertserve.server.oip.codec import read_parameters
from bertserve.server.repository import ModelPackage, VariantPackage
from bertserve.server.statistics import Statistics

MANIFEST = {"hidden_size": 384, "num_layers": 6, "max_length": 512, "default_pooling": "mean"}


def package(name: str, variants=("fp32", "fp32-opt", "int8"), labels=None) -> ModelPackage:
    manifest = {**MANIFEST, **({"labels": labels} if labels else {})}
    return ModelPackage(
        name, {v: VariantPackage(v, Path("/nowhere") / name / v, manifest) for v in variants}
    )


MODELS = {"minilm": package("minilm"), "sentiment": package("sentiment", labels=["neg", "pos"])}


def test_each_model_is_two_v2_models():
    assert triton.names(MODELS) == [
        "minilm",
        "minilm.features",
        "sentiment",
        "sentiment.features",
    ]
    typical, full = triton.resolve(MODELS, "minilm"), triton.resolve(MODELS, "minilm.features")
    assert (typical.model, typical.features, full.model, full.features) == (
        "minilm",
        False,
        "minilm",
        True,
    )
    assert triton.resolve(MODELS, "nope") is None
    assert triton.resolve(MODELS, "nope.features") is None
    assert list(typical.inputs) == ["TEXT"] and list(typical.outputs) == ["sentence_embedding"]
    assert typical.inputs["TEXT"].shape == (-1, 1) and not typical.inputs["TEXT"].optional
    assert all(t.optional for t in full.inputs.values())
    assert "hidden_states.6" in full.outputs and "hidden_states.7" not in full.outputs
    classifier = triton.resolve(MODELS, "sentiment")
    assert list(classifier.outputs) == ["label", "probabilities"]
    assert classifier.default_outputs == ("label", "probabilities")
    assert {"logits", "label", "token_embeddings"} <= set(
        triton.resolve(MODELS, "sentiment.features").outputs
    )
    # a repository model that happens to end in .features keeps its own name
    odd = {"x.features": package("x.features"), "x": package("x")}
    assert not triton.resolve(odd, "x.features").features


def test_wrong_inputs_and_outputs_name_the_other_model():
    typical = triton.resolve(MODELS, "minilm")
    with pytest.raises(InvalidArgument, match="'minilm.features' takes"):
        typical.check_input(0, "input_ids")
    error = typical.no_such_output(1, "token_embeddings")
    assert "model 'minilm.features' has every feature" in str(error)
    triton.resolve(MODELS, "minilm.features").check_input(0, "input_ids")


def test_versions_have_triton_numbers():
    assert triton.version_numbers(["fp32", "fp32-opt", "int8", "fp16"]) == {
        "fp32": "1",
        "fp32-opt": "2",
        "int8": "3",
        "fp16": "4",
    }
    # the same number whichever variants a replica has; others after, by name
    assert triton.version_numbers(["int8", "zeta", "alpha"]) == {
        "int8": "3",
        "zeta": "6",
        "alpha": "5",
    }
    assert triton.variant_of(MODELS["minilm"], "2") == "fp32-opt"
    assert triton.variant_of(MODELS["minilm"], "fp32") == "fp32"
    assert triton.variant_of(MODELS["minilm"], "9") == "9"  # the caller's NOT_FOUND says why


def test_model_config_is_the_batchers_settings():
    settings = BatchSettings(max_batch_size=24, max_queue_delay_ms=3.5, max_batch_tokens=4096)
    config = ServerConfig(repo=Path("/nowhere"), instances=2)
    typical = triton.model_config(triton.resolve(MODELS, "minilm"), "fp32-opt", settings, config)
    assert typical.name == "minilm" and typical.platform == "onnxruntime_onnx"
    assert typical.max_batch_size == 24
    assert typical.dynamic_batching.max_queue_delay_microseconds == 3500
    assert list(typical.dynamic_batching.preferred_batch_size) == []
    assert [(i.name, i.data_type, list(i.dims), i.optional) for i in typical.input] == [
        ("TEXT", mc.TYPE_STRING, [1], False)
    ]
    assert [(o.name, o.data_type, list(o.dims)) for o in typical.output] == [
        ("sentence_embedding", mc.TYPE_FP32, [384])
    ]
    assert typical.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert typical.instance_group[0].count == 2
    assert not typical.model_transaction_policy.decoupled and typical.HasField("response_cache")
    assert typical.parameters["max_batch_tokens"].string_value == "4096"
    assert typical.parameters["variant"].string_value == "fp32-opt"
    full = triton.model_config(triton.resolve(MODELS, "minilm.features"), "fp32", settings, config)
    assert {i.name: list(i.dims) for i in full.input}["input_ids"] == [-1]
    assert all(i.optional for i in full.input)
    metadata = triton.metadata(triton.resolve(MODELS, "minilm.features"), ["fp32"])
    assert [t.name for t in metadata.outputs] == [o.name for o in full.output]


def test_statistics_add_up():
    stats = Statistics()
    timing = {"total_ns": 100, "queue_ns": 10, "input_ns": 20, "infer_ns": 50, "output_ns": 5}
    for _ in range(3):
        stats.succeeded("minilm", "fp32-opt", sequences=2, **timing)
    stats.failed("minilm", "fp32-opt", 7)
    stats.batch_done("minilm/fp32-opt", 4, 0.002)
    stats.batch_done("minilm/fp32-opt", 4, 0.001)
    stats.batch_done("minilm/fp32-opt", 1, 0.001)
    answer = triton.model_statistics("minilm", "fp32-opt", "2", "minilm/fp32-opt", stats)
    assert (answer.name, answer.version) == ("minilm", "2")
    assert answer.inference_stats.success == v2.StatisticDuration(count=3, ns=300)
    assert answer.inference_stats.fail == v2.StatisticDuration(count=1, ns=7)
    assert answer.inference_stats.compute_infer == v2.StatisticDuration(count=3, ns=150)
    assert answer.inference_count == 6 and answer.execution_count == 3
    assert [
        (b.batch_size, b.compute_infer.count, b.compute_infer.ns) for b in answer.batch_stats
    ] == [
        (1, 1, 1_000_000),
        (4, 2, 3_000_000),
    ]
    assert answer.last_inference > 0
    empty = triton.model_statistics("minilm.features", "fp32", "1", "minilm/fp32", stats)
    assert empty.inference_stats.success.count == 0 and not empty.batch_stats


def test_index_states():
    ready = triton.index_entry("minilm", "fp32", loaded=True, failed=None, room=True, limit=4)
    assert (ready.state, ready.reason) == ("READY", "")
    lazy = triton.index_entry("minilm", "int8", loaded=False, failed=None, room=True, limit=4)
    assert (lazy.state, lazy.reason) == ("READY", "loads on its first request")
    full = triton.index_entry("minilm", "int8", loaded=False, failed=None, room=False, limit=4)
    assert full.state == "UNAVAILABLE" and "max_loaded_variants=4" in full.reason
    broken = triton.index_entry(
        "minilm", "fp16", loaded=False, failed="bad onnx", room=True, limit=4
    )
    assert (broken.state, broken.reason) == ("UNAVAILABLE", "bad onnx")


def test_triton_only_parameters_are_ignored_others_refused():
    request = v2.ModelInferRequest()
    request.parameters["triton_enable_empty_final_response"].bool_param = True
    request.parameters["pooling"].string_param = "mean"
    assert read_parameters(request.parameters).pooling == "mean"
    request.parameters["triton_something_else"].bool_param = True
    with pytest.raises(InvalidArgument, match="'triton_something_else'.*not a parameter"):
        read_parameters(request.parameters)
    assert set(triton.IGNORED_PARAMETERS) == {"triton_enable_empty_final_response"}


def test_the_index_lists_both_names_of_every_variant_and_the_refused():
    failed = {("minilm", "fp16"): "fp16: no CUDA", ("gone", "fp32"): "manifest unreadable"}
    index = triton.repository_index(
        MODELS,
        {"minilm": ["fp32", "fp32-opt", "int8"], "sentiment": ["fp32"]},
        failed,
        {("minilm", "fp32-opt")},
        limit=4,
    )
    got = {(m.name, m.version): (m.state, m.reason) for m in index.models}
    assert got[("minilm", "fp32-opt")] == got[("minilm.features", "fp32-opt")] == ("READY", "")
    assert got[("minilm", "fp16")] == ("UNAVAILABLE", "fp16: no CUDA")
    assert got[("gone.features", "fp32")] == ("UNAVAILABLE", "manifest unreadable")
    assert len(got) == 2 * (4 + 1 + 1)
    ready = triton.repository_index(
        MODELS, {"minilm": ["fp32"], "sentiment": []}, {}, set(), 4, ready_only=True
    )
    assert {(m.name, m.version) for m in ready.models} == {
        ("minilm", "fp32"),
        ("minilm.features", "fp32"),
    }


def test_features_declare_the_long_text_tensors_and_config_the_window():
    full = triton.resolve(MODELS, "minilm.features")
    spans = full.inputs["SPANS"]
    assert (spans.datatype, spans.shape, spans.optional) == ("INT64", (-1, 3), True)
    shown = {name: (t.datatype, t.shape) for name, t in full.outputs.items()}
    for name, declared in {
        "chunk_embeddings": ("FP32", (-1, 384)),
        "chunk_spans": ("INT32", (-1, 3)),
        "span_embeddings": ("FP32", (-1, 384)),
        "span_offsets": ("INT32", (-1, 3)),
    }.items():
        assert shown[name] == declared
    typical = triton.resolve(MODELS, "minilm")
    assert "SPANS" not in typical.inputs and "chunk_embeddings" not in typical.outputs
    metadata = triton.metadata(full, ["fp32"])
    listed = {t.name: (t.datatype, list(t.shape)) for t in [*metadata.inputs, *metadata.outputs]}
    assert listed["SPANS"] == ("INT64", [-1, 3]) and listed["span_offsets"] == ("INT32", [-1, 3])
    settings = BatchSettings(max_batch_size=24, max_queue_delay_ms=3.5, max_batch_tokens=4096)
    config = triton.model_config(full, "fp32", settings, ServerConfig(repo=Path("/nowhere")))
    inputs = {i.name: (i.data_type, list(i.dims), i.optional) for i in config.input}
    assert inputs["SPANS"] == (mc.TYPE_INT64, [3], True)
    outputs = {o.name: (o.data_type, list(o.dims)) for o in config.output}
    assert outputs["chunk_spans"] == (mc.TYPE_INT32, [3])
    assert outputs["chunk_embeddings"] == (mc.TYPE_FP32, [384])
    # max_length 512: windows of 510 content tokens, overlapping by 510 // 8
    assert config.parameters["chunk_tokens"].string_value == "510"
    assert config.parameters["chunk_overlap"].string_value == "63"

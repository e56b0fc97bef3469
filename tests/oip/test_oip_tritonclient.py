"""Triton's own Python client (tritonclient[grpc] 2.73.0, unchanged, in its own venv) against a
real server: metadata, text and token ids in, every output kind, a classifier's labels,
streaming and bad input; its numbers equal bertserve.v1's Embed and Classify, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from bertserve.client import Client

TEXTS = ["I love Paris", "Paris is lovely in the spring, they say", "ok"]
PAIRS = ["Do you?", "Who says so", "fine"]
VERSION = "fp32-opt"  # pinned: the answers compare exactly


@pytest.fixture(scope="module")
def client(classifier_server):
    with Client(classifier_server.target, timeout=120) as client:
        yield client


def padded(rows: list[np.ndarray]) -> np.ndarray:
    """Per-sequence (length, width) arrays as tritonclient gets them: (batch, longest, width)."""
    out = np.zeros((len(rows), max(len(r) for r in rows), rows[0].shape[1]), np.float32)
    for index, row in enumerate(rows):
        out[index, : len(row)] = row
    return out


def embed(client: Client, inputs=TEXTS, **kwargs):
    return client.embed(inputs, model="minilm", variant=VERSION, **kwargs)


def test_health_and_metadata(triton_run, classifier_server):
    results = triton_run.results
    assert results["live"] and results["ready"] and results["still_live"]
    assert results["server"]["name"] == "bertserve"
    assert results["model_ready"] == {"default": True, VERSION: True}
    typical = results["metadata"]["minilm"]
    assert [(t["name"], t["datatype"], t["shape"]) for t in typical["inputs"]] == [
        ("TEXT", "BYTES", ["-1", "1"])
    ]
    assert [(t["name"], t["shape"]) for t in typical["outputs"]] == [
        ("sentence_embedding", ["-1", "384"])
    ]
    minilm = results["metadata"]["minilm.features"]
    assert minilm["name"] == "minilm.features" and minilm["platform"] == "onnxruntime_onnx"
    assert set(minilm["versions"]) == {"fp32", "fp32-opt", "int8"} == set(typical["versions"])
    inputs = {t["name"]: (t["datatype"], t["shape"]) for t in minilm["inputs"]}
    assert inputs == {
        "TEXT": ("BYTES", ["-1", "1"]),
        "TEXT_PAIR": ("BYTES", ["-1", "1"]),
        "input_ids": ("INT64", ["-1", "-1"]),
        "attention_mask": ("INT64", ["-1", "-1"]),
        "token_type_ids": ("INT64", ["-1", "-1"]),
        "SPANS": ("INT64", ["-1", "3"]),
    }
    outputs = {t["name"]: (t["datatype"], t["shape"]) for t in minilm["outputs"]}
    assert outputs["sentence_embedding"] == ("FP32", ["-1", "384"])
    assert outputs["hidden_states.6"] == ("FP32", ["-1", "-1", "384"])
    assert "label" not in outputs and "hidden_states.7" not in outputs
    classifier = {t["name"]: t for t in results["metadata"]["minilm-sentiment"]["outputs"]}
    assert list(classifier) == ["label", "probabilities"]
    assert classifier["label"]["datatype"] == "BYTES"
    assert classifier["probabilities"]["shape"] == ["-1", "3"]
    extensions = results["server"]["extensions"]
    assert extensions == ["parameters", "model_configuration", "statistics"]


def test_model_config_is_what_the_server_computes(triton_run, classifier_server):
    """get_model_config, through tritonclient, equals server/triton.py's answer from the
    server's own batcher settings (the defaults: this server was given none)."""
    from bertserve.server import triton
    from bertserve.server.config import BatchSettings, ServerConfig
    from bertserve.server.repository import scan_repository
    from google.protobuf.json_format import MessageToDict

    models = scan_repository(classifier_server.repo)
    config = ServerConfig(repo=classifier_server.repo)
    for name in ("minilm", "minilm.features", "minilm-sentiment"):
        model = triton.resolve(models, name)
        expected = triton.model_config(model, VERSION, BatchSettings(), config)
        assert triton_run.results["config"][name] == MessageToDict(
            expected, preserving_proto_field_name=True
        ), name
        metadata = triton_run.results["metadata"][name]
        got = triton_run.results["config"][name]
        # ModelConfig and ModelMetadata name the same tensors; dims are the shapes less batch
        assert [i["name"] for i in got["input"]] == [t["name"] for t in metadata["inputs"]]
        assert [o["name"] for o in got["output"]] == [t["name"] for t in metadata["outputs"]]
        for tensor, described in zip(got["input"], metadata["inputs"], strict=True):
            assert tensor["dims"] == described["shape"][1:]
    typical = triton_run.results["config"]["minilm"]
    assert typical["max_batch_size"] == BatchSettings().max_batch_size == 64
    assert typical["dynamic_batching"]["max_queue_delay_microseconds"] == "2000"
    assert typical["platform"] == "onnxruntime_onnx"
    assert "optional" not in typical["input"][0]  # TEXT is required
    features = triton_run.results["config"]["minilm.features"]
    assert all(i["optional"] for i in features["input"])  # TEXT or input_ids, either
    assert typical["model_transaction_policy"] == {}  # decoupled false (proto3 default)


def test_repository_index_lists_every_model_and_variant(triton_run):
    index = {(m["name"], m["version"]): m for m in triton_run.results["index"]}
    names = ("minilm", "minilm.features", "minilm-sentiment", "minilm-sentiment.features")
    metadata = triton_run.results["metadata"]
    versions = {name: metadata[name]["versions"] for name in ("minilm", "minilm-sentiment")}
    assert set(versions["minilm"]) == {"fp32", "fp32-opt", "int8"}
    expected = {
        (name, version) for name in names for version in versions[name.removesuffix(".features")]
    }
    assert set(index) == expected
    # the served defaults are loaded; the rest load on their first request
    assert index[("minilm", "fp32-opt")] == {
        "name": "minilm",
        "version": "fp32-opt",
        "state": "READY",
    }
    assert index[("minilm", "fp32")]["state"] == "READY"  # loaded, or loads when first asked
    assert index[("minilm", "fp32")].get("reason", "loads on its first request") == (
        "loads on its first request"
    )


def test_statistics_count_the_requests_sent(triton_run):
    before, after = triton_run.results["statistics_before"], triton_run.results["statistics_after"]
    # asked by the variant's name, answered with its Triton number (fp32-opt is 2)
    assert after["name"] == "minilm" and after["version"] == "2"

    def grew(stats_key: str, field: str = "count") -> int:
        def value(stats: dict) -> int:
            return int(stats.get("inference_stats", {}).get(stats_key, {}).get(field, 0))

        return value(after) - value(before)

    sent = 5  # tritonclient_run.STATISTICS_REQUESTS, of 3 texts each
    assert grew("success") == sent
    assert grew("fail") == 1  # the request that asked for an output minilm has not
    assert triton_run.results["statistics_refused"]["status"] == "StatusCode.INVALID_ARGUMENT"
    for key in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert grew(key) == sent, key
        assert grew(key, "ns") > 0, key
    assert int(after["inference_count"]) - int(before.get("inference_count", 0)) == 3 * sent
    assert int(after["execution_count"]) >= int(before.get("execution_count", 0)) + 1
    batches = {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in after["batch_stats"]}
    assert sum(batches.values()) == int(after["execution_count"])
    assert int(after["last_inference"]) > 0
    listed = {tuple(pair) for pair in triton_run.results["statistics_all"]}
    assert ("minilm", "2") in listed and ("minilm-sentiment.features", "1") in listed


def test_text_in_equals_embed(triton_run, client):
    expected = embed(client).sentence_embedding  # the model's default pooling (mean)
    for key in ("text", "text_column"):
        assert triton_run.results[key]["model_version"] == VERSION
        assert triton_run.results[key]["id"] == key
        assert np.array_equal(triton_run.array(f"{key}.sentence_embedding"), expected), key
    pairs = embed(client, pairs=PAIRS, pooling="cls")
    assert np.array_equal(triton_run.array("pairs.sentence_embedding"), pairs.sentence_embedding)
    assert triton_run.array("pairs.lengths").tolist() == pairs.lengths.tolist()


def test_every_output_kind_equals_embed(triton_run, client):
    expected = embed(
        client, output=("sentence", "tokens"), pooling="max", layers=[0, -2, -1, 2], normalize=True
    )
    longest = int(expected.lengths.max())
    assert triton_run.results["every"]["outputs"] == {
        "sentence_embedding": ["FP32", [3, 384]],
        "token_embeddings": ["FP32", [3, longest, 384]],
        "hidden_states.0": ["FP32", [3, longest, 384]],
        "hidden_states.-2": ["FP32", [3, longest, 384]],
        "hidden_states": ["FP32", [3, 2, longest, 384]],
        "lengths": ["INT64", [3]],
    }
    got = triton_run.array
    assert np.array_equal(got("every.sentence_embedding"), expected.sentence_embedding)
    assert np.array_equal(got("every.token_embeddings"), padded(expected.token_embeddings))
    assert np.array_equal(got("every.hidden_states.0"), padded(expected.hidden_states[0]))
    assert np.array_equal(got("every.hidden_states.-2"), padded(expected.hidden_states[5]))
    stacked = got("every.hidden_states")  # layers "-1,2": the last, then layer 2
    assert np.array_equal(stacked[:, 0], padded(expected.hidden_states[6]))
    assert np.array_equal(stacked[:, 1], padded(expected.hidden_states[2]))
    assert got("every.lengths").tolist() == expected.lengths.tolist()

    concat = embed(client, aggregate="concat_last_4")
    assert got("concat.sentence_embedding").shape == (3, 4 * 384)
    assert np.array_equal(got("concat.sentence_embedding"), concat.sentence_embedding)
    layer3 = embed(client, layers=[3]).hidden_states[3]
    assert np.array_equal(got("layer_int.hidden_states")[:, 0], padded(layer3))


@pytest.mark.parametrize("datatype,dtype", [("FP16", "float16"), ("BF16", "bfloat16")])
def test_half_precision_outputs_equal_embed(triton_run, client, datatype, dtype):
    assert triton_run.results[datatype]["outputs"]["sentence_embedding"][0] == datatype
    expected = embed(client, output=("sentence", "tokens"), dtype=dtype)
    sentence = expected.sentence_embedding.astype(np.float32)
    assert np.array_equal(triton_run.array(f"{datatype}.sentence_embedding"), sentence)
    tokens = padded([t.astype(np.float32) for t in expected.token_embeddings])
    assert np.array_equal(triton_run.array(f"{datatype}.token_embeddings"), tokens)


def test_token_ids_in_equal_embed(triton_run, client):
    sequences = [
        {"input_ids": [101, 1045, 2293, 3000, 102], "token_type_ids": [0] * 5},
        {"input_ids": [101, 3000, 102, 1045, 2293, 3000, 102], "token_type_ids": [0] * 3 + [1] * 4},
    ]
    expected = embed(client, sequences, output=("sentence", "tokens"))
    assert triton_run.array("ids.lengths").tolist() == [5, 7]  # the padding was dropped
    assert np.array_equal(triton_run.array("ids.sentence_embedding"), expected.sentence_embedding)
    assert np.array_equal(
        triton_run.array("ids.token_embeddings"), padded(expected.token_embeddings)
    )
    alone = embed(client, [[101, 3000, 102, 1045, 2293, 3000, 102]])
    assert np.array_equal(triton_run.array("ids_only.sentence_embedding"), alone.sentence_embedding)


def test_classifier_labels_equal_classify(triton_run, client):
    expected = client.classify(TEXTS, model="minilm-sentiment", variant=VERSION, logits=True)
    results = triton_run.results["classify"]
    assert results["label"] == expected.labels
    assert results["outputs"]["probabilities"] == ["FP32", [3, 3]]
    assert np.array_equal(triton_run.array("classify.logits"), expected.logits)
    labels = client.info("minilm-sentiment").labels
    probabilities = triton_run.array("classify.probabilities")
    for row, result in zip(probabilities, expected.results, strict=True):
        scores = dict(zip(labels, row.tolist(), strict=True))
        assert scores == pytest.approx(result.scores, abs=1e-7)
    default = triton_run.results["classify_default"]
    assert list(default["outputs"]) == ["label", "probabilities"]
    assert default["label"] == expected.labels


def test_streaming_answers_every_request_and_errors_in_band(triton_run, client):
    stream = triton_run.results["stream"]
    assert {stream[f"stream-{i}"] for i in range(3)} == {VERSION}
    for index, text in enumerate(TEXTS):
        alone = embed(client, [text]).sentence_embedding
        assert np.array_equal(triton_run.array(f"stream.stream-{index}"), alone)
    (error,) = stream["errors"]
    assert "INVALID_ARGUMENT" in error and "'nope'" in error and "sentence_embedding" in error
    assert stream["after"] == VERSION  # the stream went on after the bad request


def test_bad_input_gets_the_status_and_a_clear_message(triton_run):
    errors = triton_run.results["errors"]
    assert errors["unknown_model"]["status"] == "StatusCode.NOT_FOUND"
    assert "'nope' not found" in errors["unknown_model"]["message"]
    assert errors["unknown_model_ready"]["status"] == "StatusCode.NOT_FOUND"
    assert errors["unknown_version"]["status"] == "StatusCode.NOT_FOUND"
    assert "['fp32', 'fp32-opt', 'int8']" in errors["unknown_version"]["message"]
    for name, says in (
        ("wrong_datatype", "TEXT: datatype 'INT64'; allowed BYTES"),
        ("unknown_output", "has no such output"),
        ("unknown_parameter", "parameters['poolin']: not a parameter of this server"),
        ("bad_pooling", "parameters['pooling']='avg': allowed one of ['cls'"),
    ):
        assert errors[name]["status"] == "StatusCode.INVALID_ARGUMENT", name
        assert says in errors[name]["message"], errors[name]

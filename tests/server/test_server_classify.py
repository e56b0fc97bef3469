"""Classify against an in-process server on a repository holding MiniLM fine-tuned on real rows
(and the base MiniLM): labels, probabilities, logits and embeddings of the same forward pass,
batching, and every bad input; answers are compared with direct onnxruntime runs."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest
from bertserve.server.config import BatchSettings
from bertserve.v1 import bertserve_pb2 as pb
from server_helpers import decode_tensor, reference_ids, reference_outputs, start_in_process

MODEL = "minilm-sentiment"
TEXTS = ["I love Paris", "This is the worst service I have ever had.", "The meeting is at 3pm."]
LABELS = ["negative", "neutral", "positive"]


@pytest.fixture(scope="module")
async def served(classifier_repo):
    running = await start_in_process(
        classifier_repo,
        batch=BatchSettings(max_batch_size=8),
        default_model=MODEL,
        variants={MODEL: "fp32-opt", "minilm": "fp32-opt"},  # compared with that model
    )
    yield running
    await running.channel.close()
    await running.server.stop(1)


def references(served, texts=TEXTS, pairs=None, variant="fp32-opt"):
    folder = served.repo / MODEL / variant
    found = []
    for index, text in enumerate(texts):
        ids, types = reference_ids(folder, text, pairs[index] if pairs else None)
        found.append(reference_outputs(folder, ids, types))
    return found


def probabilities(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(-1, keepdims=True))
    return exp / exp.sum(-1, keepdims=True)


def outputs_of(response: pb.ClassifyResponse) -> dict[str, np.ndarray]:
    return {piece.name: decode_tensor(piece.tensor) for piece in response.outputs}


async def test_labels_and_probabilities_of_every_label(served):
    response = await served.stub.Classify(pb.ClassifyRequest(texts=TEXTS))
    assert response.model == MODEL and response.variant == "fp32-opt"
    assert len(response.lengths) == 3 and response.lengths[0] == 5  # [CLS] i love paris [SEP]
    assert not response.outputs  # labels only, unless asked
    for result, ref in zip(response.results, references(served), strict=True):
        expected = probabilities(ref["logits"])
        assert [s.label for s in result.labels] == [LABELS[i] for i in np.argsort(-expected)]
        assert result.label == result.labels[0].label
        scores = {s.label: s.score for s in result.labels}
        np.testing.assert_allclose([scores[label] for label in LABELS], expected, atol=1e-5)
        assert abs(sum(scores.values()) - 1) < 1e-5
    assert response.timing.tokens == sum(response.lengths) and response.timing.total_ns > 0


@pytest.mark.parametrize(("top_k", "count"), [(1, 1), (2, 2), (0, 3), (99, 3)])
async def test_top_k(served, top_k, count):
    response = await served.stub.Classify(pb.ClassifyRequest(texts=TEXTS, top_k=top_k))
    assert [len(r.labels) for r in response.results] == [count] * len(TEXTS)


async def test_logits_and_embeddings_of_the_same_forward_pass(served):
    response = await served.stub.Classify(
        pb.ClassifyRequest(
            texts=TEXTS, logits=True, pooling=pb.POOLING_CLS, layers=[0, -1], dtype=pb.DTYPE_FLOAT16
        )
    )
    outputs = outputs_of(response)
    assert sorted(outputs) == ["hidden_states.0", "hidden_states.6", "logits", "sentence_embedding"]
    refs = references(served)
    dtypes = {piece.name: piece.tensor.dtype for piece in response.outputs}
    assert dtypes["logits"] == pb.DTYPE_FLOAT32  # logits stay float32
    assert dtypes["sentence_embedding"] == pb.DTYPE_FLOAT16
    np.testing.assert_allclose(outputs["logits"], np.stack([r["logits"] for r in refs]), atol=1e-4)
    np.testing.assert_allclose(
        outputs["sentence_embedding"],
        np.stack([r["last_hidden_state"][0] for r in refs]),
        atol=5e-3,  # float16 on the wire
    )
    np.testing.assert_allclose(
        outputs["hidden_states.6"], np.concatenate([r["hidden_states.6"] for r in refs]), atol=5e-3
    )
    # the same features as Embed gives for this model
    embedded = await served.stub.Embed(
        pb.EmbedRequest(texts=TEXTS, model=MODEL, pooling=pb.POOLING_CLS)
    )
    np.testing.assert_allclose(
        decode_tensor(embedded.outputs[0].tensor), outputs["sentence_embedding"], atol=5e-3
    )


async def test_token_sequences_and_text_pairs(served):
    folder = served.repo / MODEL / "fp32-opt"
    ids, _ = reference_ids(folder, TEXTS[0])
    by_ids = await served.stub.Classify(
        pb.ClassifyRequest(sequences=[pb.TokenSequence(input_ids=ids)], logits=True)
    )
    by_text = await served.stub.Classify(pb.ClassifyRequest(texts=TEXTS[:1], logits=True))
    np.testing.assert_allclose(
        outputs_of(by_ids)["logits"], outputs_of(by_text)["logits"], atol=1e-5
    )
    pairs = ["Really?", "Never again.", "Fine."]
    response = await served.stub.Classify(
        pb.ClassifyRequest(texts=TEXTS, text_pairs=pairs, logits=True)
    )
    expected = np.stack([r["logits"] for r in references(served, pairs=pairs)])
    np.testing.assert_allclose(outputs_of(response)["logits"], expected, atol=1e-4)


async def test_concurrent_calls_answer_their_own_texts(served):
    # (whether they share batches depends on when each arrives: not asserted)
    texts = [f"{text} ({i})" for i in range(4) for text in TEXTS]
    alone = [
        outputs_of(await served.stub.Classify(pb.ClassifyRequest(texts=[t], logits=True)))
        for t in texts
    ]
    together = await asyncio.gather(
        *(served.stub.Classify(pb.ClassifyRequest(texts=[t], logits=True)) for t in texts)
    )
    for one, response in zip(alone, together, strict=True):
        np.testing.assert_allclose(outputs_of(response)["logits"], one["logits"], atol=1e-4)


async def test_int8_variant(served):
    response = await served.stub.Classify(pb.ClassifyRequest(texts=TEXTS, variant="int8"))
    assert response.variant == "int8" and len(response.results) == 3


async def test_model_info_lists_the_labels(served):
    info = (await served.stub.ModelInfo(pb.ModelInfoRequest(model=MODEL))).model
    assert list(info.labels) == LABELS and info.architecture == "BertForSequenceClassification"


@pytest.mark.parametrize(
    ("request_fields", "code", "message"),
    [
        ({"model": "minilm"}, "FAILED_PRECONDITION", "'minilm' has no classification head"),
        ({"model": "nope"}, "NOT_FOUND", "'nope' not found"),
        ({"variant": "fp16"}, "INVALID_ARGUMENT", "variant='fp16'"),
        ({"texts": []}, "INVALID_ARGUMENT", "empty input"),
        ({"text_pairs": ["a"]}, "INVALID_ARGUMENT", "text_pairs: 1 given for 3 texts"),
        (
            {"sequences": [pb.TokenSequence(input_ids=[101, 102])]},
            "INVALID_ARGUMENT",
            "allowed: exactly one of them",
        ),
        ({"texts": [""]}, "INVALID_ARGUMENT", "texts[0]: empty string"),
        ({"texts": ["word " * 600]}, "INVALID_ARGUMENT", "set truncate=true"),
        ({"layers": [7]}, "INVALID_ARGUMENT", "layers[0]=7: no such layer; allowed -7..6"),
        ({"normalize": True}, "INVALID_ARGUMENT", "normalize=true: needs a sentence embedding"),
        (
            {"texts": ["word " * 500] * 8, "all_layers": True, "truncate": True},
            "RESOURCE_EXHAUSTED",
            "over the 4 MiB message limit of Classify",
        ),
    ],
)
async def test_bad_requests_get_the_right_status(served, request_fields, code, message):
    fields = {"texts": TEXTS, **request_fields}
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await served.stub.Classify(pb.ClassifyRequest(**fields))
    assert error.value.code().name == code
    assert message in error.value.details()
    # and the server goes on
    assert (await served.stub.Classify(pb.ClassifyRequest(texts=TEXTS[:1]))).results

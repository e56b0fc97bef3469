"""The Python client's classify, blocking and asyncio, against a live server with a fine-tuned
MiniLM: labels, scores, logits and features agree with each other and with Embed."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from bertserve.client import AsyncClient, BertserveError, ClassifyResult, Client

TEXTS = ["I love Paris", "This is the worst service I have ever had."]


def check(result: ClassifyResult) -> None:
    assert len(result) == 2 and result.model == "minilm-sentiment"
    assert result.labels == [r.label for r in result.results]
    for item in result.results:
        assert list(item.scores)[0] == item.label  # best first
        assert abs(sum(item.scores.values()) - 1) < 1e-5


def test_sync_classify_with_logits_and_features(classifier_server):
    with Client(classifier_server.target) as client:
        plain = client.classify(TEXTS)
        check(plain)
        assert plain.logits is None and plain.features is None
        rich = client.classify(TEXTS, logits=True, pooling="mean", layers=[-1], top_k=1)
        assert rich.labels == plain.labels and all(len(r.scores) == 1 for r in rich.results)
        exp = np.exp(rich.logits - rich.logits.max(-1, keepdims=True))
        best = (exp / exp.sum(-1, keepdims=True)).max(-1)
        np.testing.assert_allclose([r.scores[r.label] for r in rich.results], best, atol=1e-5)
        embedded = client.embed(TEXTS, pooling="mean", layers=[-1])
        np.testing.assert_allclose(
            rich.features.sentence_embedding, embedded.sentence_embedding, atol=1e-5
        )
        top = client.info().num_layers
        assert list(rich.features.hidden_states) == [top]
        for ours, theirs in zip(
            rich.features.hidden_states[top], embedded.hidden_states[top], strict=True
        ):
            np.testing.assert_allclose(ours, theirs, atol=1e-5)
        pairs = client.classify(TEXTS, pairs=["Really?", "Never."])
        assert len(pairs) == 2
        with pytest.raises(BertserveError) as error:
            client.classify(TEXTS, model="minilm")
        assert error.value.code is grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(ValueError, match="top_k=-1"):
            client.classify(TEXTS, top_k=-1)


async def test_async_classify_agrees_with_sync(classifier_server):
    with Client(classifier_server.target) as client:
        expected = client.classify(TEXTS, logits=True)
    async with AsyncClient(classifier_server.target) as client:
        result = await client.classify(TEXTS, logits=True)
        check(result)
        assert result.labels == expected.labels
        np.testing.assert_allclose(result.logits, expected.logits, atol=1e-5)
        tokens = await client.classify([[101, 1045, 2293, 3000, 102]], output="tokens")
        assert tokens.features.token_embeddings[0].shape[0] == 5

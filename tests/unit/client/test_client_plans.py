"""The plans both clients run, stepped by hand: which calls a method makes, in what order,
and what it does when one fails. No server: each step's answer is given here."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from bertserve.client import Client
from bertserve.client import health as health_codec
from bertserve.client.calls import HEALTH, Pause, Stream, Unary
from bertserve.client.errors import ANSWER_TOO_LARGE, BertserveError
from bertserve.client.request import EmbedOptions
from bertserve.client.results import EmbedResult
from bertserve.v1 import bertserve_pb2 as pb

MODEL = pb.ModelInfo(
    name="m", num_layers=2, hidden_size=2, max_length=512, default_pooling=pb.POOLING_CLS
)


def sentence_answer(request_id: str, rows: int = 1) -> pb.EmbedResponse:
    vectors = np.zeros((rows, 2), np.float32)
    tensor = pb.Tensor(dtype=pb.DTYPE_FLOAT32, shape=[rows, 2], data=vectors.tobytes())
    piece = pb.TensorPiece(name="sentence_embedding", total_rows=rows, tensor=tensor)
    return pb.EmbedResponse(id=request_id, lengths=[3] * rows, outputs=[piece], last=True)


def finish(plan, reply):
    with pytest.raises(StopIteration) as done:
        plan.send(reply)
    return done.value.value


@pytest.fixture
def client():
    with Client("127.0.0.1:9", model="m", variant="int8") as client:  # never called
        yield client


def test_embed_is_one_unary_call(client):
    plan = client._embed_plan(["a", "b"], pooling="mean", normalize=True)
    step = next(plan)
    assert step == Unary(
        "Embed",
        pb.EmbedRequest(
            id="0",
            model="m",
            variant="int8",
            texts=["a", "b"],
            pooling=pb.POOLING_MEAN,
            normalize=True,
            dtype=pb.DTYPE_FLOAT32,
        ),
        None,
    )
    result = finish(plan, sentence_answer("0", 2))
    assert isinstance(result, EmbedResult) and result.sentence_embedding.shape == (2, 2)
    # options= carries the same value; the next call gets the next id
    options = EmbedOptions.parse(pooling="mean", normalize=True)
    again = next(client._embed_plan(["a", "b"], options=options, timeout=5.0))
    assert again.request.id == "1" and again.request.pooling == pb.POOLING_MEAN
    assert 0 < again.timeout <= 5.0


def test_token_outputs_ask_for_the_model_once(client):
    plan = client._embed_plan("a", layers=[-1])
    assert next(plan) == Unary("ModelInfo", pb.ModelInfoRequest(model="m"), None)
    step = plan.send(pb.ModelInfoResponse(model=MODEL))
    assert step.method == "Embed" and list(step.request.layers) == [2]
    assert next(client._embed_plan("a", layers=[0], model="m")).method == "Embed"  # cached


def test_unavailable_is_retried_after_a_pause_then_raised(client):
    plan = client._embed_plan("a")
    first = next(plan)
    unavailable = BertserveError(grpc.StatusCode.UNAVAILABLE, "reset")
    assert plan.throw(unavailable) == Pause(0.05)
    assert plan.send(None) == first
    assert plan.throw(unavailable) == Pause(0.1)
    assert plan.send(None) == first
    with pytest.raises(BertserveError) as error:
        plan.throw(unavailable)
    assert error.value is unavailable
    # other codes are not retried
    plan = client._embed_plan("a")
    next(plan)
    with pytest.raises(BertserveError, match="INVALID_ARGUMENT"):
        plan.throw(BertserveError(grpc.StatusCode.INVALID_ARGUMENT, "bad"))


def test_an_answer_too_large_goes_over_embed_stream_in_pieces(client):
    plan = client._embed_plan([f"t{i}" for i in range(300)], timeout=30.0)
    step = next(plan)  # over 256 inputs: EmbedStream at once
    assert isinstance(step, Stream) and [r.id for r in step.requests] == ["0/0", "0/1"]
    parts = [EmbedResult.from_pb(sentence_answer(r.id, len(r.texts))) for r in step.requests]
    joined = finish(plan, parts)
    assert joined.id == "0" and joined.sentence_embedding.shape == (300, 2)

    plan = client._embed_plan(["a"], timeout=30.0)
    next(plan)
    too_large = BertserveError(grpc.StatusCode.RESOURCE_EXHAUSTED, "big", reason=ANSWER_TOO_LARGE)
    step = plan.throw(too_large)
    assert isinstance(step, Stream) and [r.id for r in step.requests] == ["1/0"]
    assert step.deadline is not None  # what is left of the same 30 s


def test_classify_names_the_default_pooling_for_a_sentence_vector(client):
    plan = client._classify_plan(["a"], output="sentence", top_k=1)
    assert next(plan).method == "ModelInfo"
    step = plan.send(pb.ModelInfoResponse(model=MODEL))
    assert step.request == pb.ClassifyRequest(
        id="0",
        model="m",
        variant="int8",
        texts=["a"],
        top_k=1,
        pooling=pb.POOLING_CLS,
        dtype=pb.DTYPE_FLOAT32,
    )
    labels_only = next(client._classify_plan(["a"], truncate=True))
    assert labels_only.request == pb.ClassifyRequest(
        id="1", model="m", variant="int8", texts=["a"], truncate=True
    )


def test_other_calls(client):
    health = client._health_plan("svc", timeout=2.0)
    step = next(health)
    assert step.method == HEALTH and step.request == health_codec.encode_request("svc")
    tokenize = next(client._tokenize_plan("a", pad_to=8))
    assert tokenize == Unary("Tokenize", pb.TokenizeRequest(model="m", texts=["a"], pad_to=8), None)
    source = client._stream_source(layers="all")
    next(source)
    with pytest.raises(StopIteration) as done:
        source.send(pb.ModelInfoResponse(model=MODEL))
    request = done.value.value.request(["x"], 4)
    assert request.id == "4" and request.all_layers and request.model == "m"

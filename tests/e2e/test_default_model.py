"""The default-model rule on real servers (issue 18): with several models and none marked, a
request that names no model is refused with the list, never answered by "the first by name";
a marked default answers; Classify goes to the only classifier; v1 and v2 agree on the models.

Cheap repositories: MiniLM's fp32-opt hard-linked under several names, and a 2-layer
random-weight classifier exported once (fp32 only)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import grpc
import pytest
from bertserve.client import BertserveError, Client
from bertserve.inference import grpc_service_pb2 as v2
from bertserve.inference import grpc_service_pb2_grpc
from bertserve.v1 import bertserve_pb2 as pb
from bertserve.v1 import bertserve_pb2_grpc
from servers import link_package, start_server

PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory):
    """A package folder: a random 2-layer BertForSequenceClassification with MiniLM's
    vocabulary and the labels negative/positive (numbers with no meaning)."""
    import torch
    from bertserve.export import export_model
    from bertserve.export.sources import minilm_path
    from transformers import BertConfig, BertForSequenceClassification

    source = minilm_path()
    checkpoint = tmp_path_factory.mktemp("tiny-classifier")
    labels = {0: "negative", 1: "positive"}
    config = BertConfig(
        vocab_size=json.loads((source / "config.json").read_text())["vocab_size"],
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        id2label=labels,
        label2id={label: i for i, label in labels.items()},
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(checkpoint)
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(source / name, checkpoint / name)
    repo = tmp_path_factory.mktemp("tiny-classifier-repo")
    export_model(str(checkpoint), repo=repo, name="cls", variants=["fp32"], progress=False)
    return repo / "cls" / "fp32"


@pytest.fixture(scope="module")
def repo(model_repo, tiny_classifier, tmp_path_factory):
    """alpha (MiniLM, no head) and cls (a classifier)."""
    folder = tmp_path_factory.mktemp("two-models")
    link_package(model_repo / "minilm" / "fp32-opt", folder / "alpha" / "fp32-opt")
    link_package(tiny_classifier, folder / "cls" / "fp32")
    return folder


def refused(call, request) -> str:
    with pytest.raises(grpc.RpcError) as error:
        call(request, timeout=60)
    assert error.value.code() == PRECONDITION, error.value.details()
    return error.value.details()


def test_no_default_refuses_unnamed_requests_with_the_list(repo, tiny_classifier, tmp_path):
    # a second classifier beside the first: Classify cannot choose either
    folder = tmp_path / "repo"
    shutil.copytree(repo, folder, copy_function=shutil.copy2)
    link_package(tiny_classifier, folder / "cls2" / "fp32")
    server = start_server(folder, "--no-warmup", metrics=False)
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = bertserve_pb2_grpc.BertServiceStub(channel)
            listed = "name one of 'alpha', 'cls', 'cls2'"
            for call, request in (
                (stub.Embed, pb.EmbedRequest(texts=["I love Paris"])),
                (stub.Tokenize, pb.TokenizeRequest(texts=["I love Paris"])),
                (stub.ModelInfo, pb.ModelInfoRequest()),
            ):
                message = refused(call, request)
                assert message.startswith("model: empty, and this server has 3 models"), message
                assert listed in message and "default_model" in message, message
            # EmbedStream: the same refusal, in-band
            streamed = list(stub.EmbedStream(iter([pb.EmbedRequest(id="1", texts=["x"])])))
            assert streamed[0].error.code == PRECONDITION.value[0]
            assert listed in streamed[0].error.message
            message = refused(stub.Classify, pb.ClassifyRequest(texts=["I love Paris"]))
            assert "2 models have one; name one of 'cls', 'cls2'" in message, message
            # named ones answer; nobody is the default
            assert stub.Embed(pb.EmbedRequest(model="alpha", texts=["x"]), timeout=60).model
            models = stub.ListModels(pb.ListModelsRequest(), timeout=60).models
            assert [(m.name, m.is_default) for m in models] == [
                ("alpha", False),
                ("cls", False),
                ("cls2", False),
            ]
            # the v2 side lists the same models (a v2 request always names one)
            v2_stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
            index = v2_stub.RepositoryIndex(v2.RepositoryIndexRequest(), timeout=60).models
            assert {m.name for m in index} == {
                name + suffix for name in ("alpha", "cls", "cls2") for suffix in ("", ".features")
            }
        with Client(server.target, timeout=60) as client:
            with pytest.raises(BertserveError) as error:
                client.embed("I love Paris")
            assert error.value.code == PRECONDITION and listed in error.value.details
        # the CLI says it with its own flag
        for command, named in (("embed", listed), ("classify", "name one of 'cls', 'cls2'")):
            done = subprocess.run(
                [sys.executable, "-m", "bertserve.client.cli", command, "I love Paris"]
                + ["--target", server.target],
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert done.returncode == 2 and named in done.stderr, done.stderr
            assert done.stderr.startswith("bertserve: FAILED_PRECONDITION: no --model given, and ")
    finally:
        server.stop()


def test_the_marked_default_answers_and_classify_finds_the_classifier(repo):
    server = start_server(repo, "--no-warmup", "--default-model", "alpha", metrics=False)
    try:
        with Client(server.target, timeout=60) as client:
            assert client.embed("I love Paris").model == "alpha"
            assert client.info().name == "alpha"
            assert [(m.name, m.is_default) for m in client.models()] == [
                ("alpha", True),
                ("cls", False),
            ]
            # alpha has no classification head, cls is the only model with one
            result = client.classify("I love Paris")
            assert result.model == "cls" and result.labels[0] in ("negative", "positive")
        with grpc.insecure_channel(server.target) as channel:
            stub = bertserve_pb2_grpc.BertServiceStub(channel)
            tokenized = stub.Tokenize(pb.TokenizeRequest(texts=["I love Paris"]), timeout=60)
            assert tokenized.model == "alpha"
            v2_stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as error:  # v2 has no default: a name it needs
                v2_stub.ModelMetadata(v2.ModelMetadataRequest(name=""), timeout=60)
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "'alpha'" in error.value.details() and "'cls'" in error.value.details()
    finally:
        server.stop()


def test_a_default_model_that_names_no_model_stops_the_server_at_start(repo):
    done = subprocess.run(
        [sys.executable, "-m", "bertserve.client.cli", "serve", "--repo", str(repo)]
        + ["--port", "0", "--default-model", "alhpa"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert "default_model='alhpa': no such model" in done.stderr
    assert "it holds 'alpha', 'cls'" in done.stderr

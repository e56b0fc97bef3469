"""The default-model rule (server/defaults.py and ModelRegistry): no model is loaded, the
registry only scans a repository of manifests."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from bertserve.server.config import ServerConfig, load_config
from bertserve.server.defaults import choose_default, classify_model, no_default
from bertserve.server.errors import FailedPrecondition, status_of
from bertserve.server.models import ModelRegistry
from bertserve.server.v1.codec import field_name


def refusal(call, *args) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(FailedPrecondition) as caught:
        call(*args)
    return status_of(caught.value, field_name)


def test_the_operators_default_wins_and_one_model_is_its_own_default():
    assert choose_default(["alpha", "beta"], "beta") == "beta"
    assert choose_default(["alpha"], None) == "alpha"
    # several models and none marked: no default, never the first by name
    assert choose_default(["alpha", "beta"], None) is None
    # a model refused at scan still counts: fixing it later must not change who answers
    assert choose_default(["alpha"], None, refused=["broken"]) is None
    # ... and it may be the marked default (its callers get its refusal)
    assert choose_default(["alpha"], "broken", refused=["broken"]) == "broken"


def test_a_default_model_naming_no_model_lists_the_real_ones():
    with pytest.raises(ValueError) as caught:
        choose_default(["beta", "alpha"], "alpah", where="models")
    message = str(caught.value)
    assert "default_model='alpah': no such model in models" in message
    assert "it holds 'alpha', 'beta'" in message and "--default-model" in message


def test_the_refusal_names_the_field_the_models_and_the_setting():
    code, message = status_of(no_default(["beta", "alpha"]), field_name)
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert message.startswith("model: empty, and this server has 2 models and no default model")
    assert "name one of 'alpha', 'beta'" in message and "default_model" in message


@pytest.mark.parametrize(
    ("default", "labelled", "chosen"),
    [
        ("cls", {"cls": True, "other": True, "plain": False}, "cls"),  # the default has a head
        ("plain", {"cls": True, "plain": False}, "cls"),  # the only one with a head
        (None, {"cls": True, "plain": False, "plain2": False}, "cls"),
        (None, {"cls": True}, "cls"),
    ],
)
def test_classify_goes_to_the_default_classifier_or_the_only_one(default, labelled, chosen):
    assert classify_model(default, labelled) == chosen


def test_classify_refuses_naming_the_models_that_have_a_head():
    code, message = refusal(classify_model, None, {"a": True, "b": True, "plain": False})
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "no default model and 2 models have one; name one of 'a', 'b'" in message
    assert message.startswith("model: ")
    _, message = refusal(classify_model, "plain", {"a": True, "b": True, "plain": False})
    assert "the default model 'plain' has no classification head" in message
    _, message = refusal(classify_model, "plain", {"plain": False})
    assert "model 'plain' has no classification head" in message
    _, message = refusal(classify_model, None, {"p": False, "q": False})
    assert "no model of this server has a classification head" in message


# -- the registry: a repository of manifests, nothing loaded ----------------------------


def package(repo: Path, model: str, labels: list[str] | None = None) -> None:
    folder = repo / model / "fp32"
    folder.mkdir(parents=True)
    manifest = {"num_layers": 1, "hidden_size": 8, "vocab_size": 10, "labels": labels}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "model.onnx").write_bytes(b"")  # never loaded: the registry only scans


def registry(repo: Path, **settings: str) -> ModelRegistry:
    return ModelRegistry(ServerConfig(repo=repo, **settings))


def test_the_registry_answers_unnamed_requests_by_the_rule(tmp_path):
    package(tmp_path, "beta")
    alone = registry(tmp_path)
    assert alone.default_model == "beta" and alone.model("").name == "beta"
    package(tmp_path, "alpha")  # a model added beside it: unnamed requests are refused
    both = registry(tmp_path)
    assert both.default_model is None
    code, message = refusal(both.model, "")
    assert "name one of 'alpha', 'beta'" in message
    assert both.model("alpha").name == "alpha"  # named ones still answer
    marked = registry(tmp_path, default_model="beta")
    assert marked.default_model == "beta" and marked.model("").name == "beta"


def test_the_registry_picks_the_classifier_for_classify(tmp_path):
    package(tmp_path, "alpha")
    package(tmp_path, "sentiment", ["negative", "positive"])
    assert registry(tmp_path).classifier("").name == "sentiment"
    assert registry(tmp_path, default_model="alpha").classifier("").name == "sentiment"
    package(tmp_path, "topics", ["a", "b", "c"])
    _, message = refusal(registry(tmp_path).classifier, "")
    assert "name one of 'sentiment', 'topics'" in message
    assert registry(tmp_path, default_model="topics").classifier("").name == "topics"
    assert registry(tmp_path).classifier("alpha").name == "alpha"  # named: Classify says why


def test_a_default_model_typo_is_a_startup_error_from_flag_and_yaml(tmp_path):
    package(tmp_path / "repo", "alpha")
    package(tmp_path / "repo", "beta")
    (tmp_path / "server.yaml").write_text("default_model: bta\n")
    for config in (
        load_config({"repo": str(tmp_path / "repo"), "default_model": "bta"}, environ={}),
        load_config({"repo": str(tmp_path / "repo")}, tmp_path / "server.yaml", environ={}),
    ):
        assert config.default_model == "bta"
        with pytest.raises(ValueError) as caught:
            ModelRegistry(config)
        assert "default_model='bta': no such model" in str(caught.value)
        assert "it holds 'alpha', 'beta'" in str(caught.value)

"""`bertserve finetune` end to end: real data, real training, the export validated against
PyTorch, and the labels served over gRPC Classify agreeing with PyTorch on every row."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from bertserve.client import Client
from bertserve.export.validate import LabelledTexts, softmax, torch_logits
from bertserve.train.data import load_dataset
from safetensors.torch import load_file
from servers import start_server
from training import CLI, bertserve_cli, finetuned
from transformers import AutoTokenizer, BertForSequenceClassification


def pytorch_probabilities(checkpoint: Path, texts: list[str]) -> tuple[list[str], np.ndarray]:
    """The checkpoint's label names and probabilities of each text, by transformers."""
    model = BertForSequenceClassification.from_pretrained(checkpoint).eval()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    with torch.no_grad():
        logits = torch_logits(model, tokenizer, LabelledTexts(texts), 512)
    return [model.config.id2label[i] for i in range(model.config.num_labels)], softmax(logits)


def assert_served_like_pytorch(
    target: str, model: str, checkpoint: Path, texts: list[str], variant: str = "fp32"
) -> None:
    """Same label on every row, every probability within 1e-4 (fp32 variants)."""
    names, expected = pytorch_probabilities(checkpoint, texts)
    with Client(target) as client:
        result = client.classify(texts, model=model, variant=variant)
    got = np.array([[r.scores[name] for name in names] for r in result.results])
    assert result.labels == [names[i] for i in expected.argmax(-1)]
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_minilm_fine_tuned_on_real_rows_serves_pytorch_labels(
    classifier_repo: Path, classifier_server, small_sentiment: Path
):
    data = load_dataset(small_sentiment)
    manifest = json.loads((classifier_repo / "minilm-sentiment/fp32/manifest.json").read_text())
    assert manifest["task"] == "text-classification"
    assert manifest["labels"] == ["negative", "neutral", "positive"]
    assert manifest["outputs"][:3] == ["logits", "last_hidden_state", "pooler_output"]
    assert manifest["outputs"][-1] == f"hidden_states.{manifest['num_layers']}"
    assert manifest["validation"]["passed"]
    assert manifest["validation"]["max_abs_error"]["logits"] <= 1e-4
    training = manifest["training"]
    assert training["base_model"] == "minilm" and training["epochs_run"] == 1
    assert training["train_rows"] == len(data.train) and training["rows_per_second"] > 0
    first, trained = training["history"]
    # the loss goes down: within the epoch, and on validation rows against the untrained head
    assert trained["train_loss_last"] < trained["train_loss_first"]
    assert trained["validation"]["loss"] < first["validation"]["loss"]
    assert manifest["data"]["sha256"] == data.sha256
    evaluation = manifest["evaluation"]
    assert evaluation["data"] == "test" and evaluation["rows"] == len(data.test)
    assert evaluation["fp32"]["label_agreement"] == 1.0
    int8 = json.loads((classifier_repo / "minilm-sentiment/int8/manifest.json").read_text())
    assert set(int8["evaluation"]["int8"]) >= {"label_agreement", "accuracy_change_points"}
    checkpoint = classifier_repo / ".finetune/minilm-sentiment/best"
    for variant in ("fp32", "fp32-opt"):
        assert_served_like_pytorch(
            classifier_server.target, "minilm-sentiment", checkpoint, data.test.texts, variant
        )
    done = bertserve_cli("classify", "I love Paris", "--target", classifier_server.target)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith('"I love Paris": ')
    assert sorted(line.split()[0] for line in lines[1:]) == ["negative", "neutral", "positive"]


def _cased_checkpoint(folder: Path, data: Path) -> Path:
    """A small RANDOM cased BERT: a WordPiece vocabulary that keeps case, learnt from the data."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    texts = [json.loads(line)["text"] for line in (data / "train.jsonl").open(encoding="utf-8")]
    wordpiece = BertWordPieceTokenizer(lowercase=False, strip_accents=False)
    wordpiece.train_from_iterator([*texts, "I love Paris"], vocab_size=1500, min_frequency=1)
    folder.mkdir()
    wordpiece.save_model(str(folder))
    tokenizer = BertTokenizerFast(str(folder / "vocab.txt"), do_lower_case=False)
    tokenizer.save_pretrained(folder)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=256,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return folder


def test_small_random_cased_config_end_to_end(tmp_path: Path, small_sentiment: Path):
    base = _cased_checkpoint(tmp_path / "cased-bert", small_sentiment)
    repo = tmp_path / "repo"
    finetuned(repo, "cased", small_sentiment, str(base), "--epochs", "2", "--lr", "1e-3")
    manifest = json.loads((repo / "cased/fp32/manifest.json").read_text())
    assert manifest["lowercase"] is False and manifest["labels"]
    history = manifest["training"]["history"]
    assert history[-1]["validation"]["loss"] < history[0]["validation"]["loss"]
    server = start_server(repo, "--variant", "cased=fp32-opt", metrics=False)
    try:
        with Client(server.target) as client:
            assert client.info("cased").lowercase is False
            upper, lower = client.tokenize(["Paris", "paris"], model="cased")
            assert upper.input_ids != lower.input_ids  # case kept
        texts = load_dataset(small_sentiment).test.texts
        assert_served_like_pytorch(server.target, "cased", repo / ".finetune/cased/best", texts)
    finally:
        server.stop()


TINY = ("--config", "bert-tiny", "--epochs", "4", "--patience", "4", "--batch-size", "8")
TINY_LR = ("--lr", "1e-3")  # random weights learn slowly at BERT's usual rates


def test_interrupted_training_resumes_to_the_same_model(tmp_path: Path, small_sentiment: Path):
    straight = finetuned(tmp_path / "a", "tiny", small_sentiment, *TINY, *TINY_LR, variants="fp32")
    repo = tmp_path / "b"
    command = [
        *CLI,
        "finetune",
        *TINY,
        *TINY_LR,
        *("--data", str(small_sentiment), "--out", str(repo), "--name", "tiny"),
        *("--variants", "fp32", "--no-progress"),
    ]
    work = repo / ".finetune" / "tiny"
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (work / "epoch-1").is_dir():  # interrupt during the second epoch
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr
    assert "run the same command again to resume" in stderr
    assert not (repo / "tiny").exists()
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    # deterministic under the seed: the resumed run ends where the uninterrupted one did
    ours = load_file(work / "best/model.safetensors")
    theirs = load_file(tmp_path / "a/.finetune/tiny/best/model.safetensors")
    assert ours.keys() == theirs.keys()
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=0, atol=1e-6)
    a = json.loads((straight / "fp32/manifest.json").read_text())["training"]["history"]
    b = json.loads((repo / "tiny/fp32/manifest.json").read_text())["training"]["history"]
    assert [h["validation"] for h in a] == [h["validation"] for h in b]
    # the tiny random config learnt something, and is served as PyTorch computes it
    assert b[-1]["validation"]["loss"] < b[0]["validation"]["loss"]
    server = start_server(repo, metrics=False)
    try:
        texts = load_dataset(small_sentiment).test.texts
        assert_served_like_pytorch(server.target, "tiny", work / "best", texts)
    finally:
        server.stop()


def _fails(*args: str) -> str:
    done = bertserve_cli("finetune", *args, "--no-progress")
    assert done.returncode == 1, done.stderr
    return done.stderr


def test_bad_input_is_a_clear_error(tmp_path: Path, small_sentiment: Path):
    out = str(tmp_path / "repo")
    common = ("--data", str(small_sentiment), "--out", out)
    assert "no label column 'sentiment'" in _fails("minilm", *common, "--label-column", "sentiment")
    assert "epochs=0: must be positive" in _fails("--config", "bert-tiny", *common, "--epochs", "0")
    roberta = tmp_path / "roberta"
    roberta.mkdir()
    (roberta / "config.json").write_text(json.dumps({"model_type": "roberta"}))
    assert "bertserve exports BERT models" in _fails(str(roberta), *common)
    assert "nothing to export" in _fails(*common)
    # an existing package is refused before any training, not after
    (tmp_path / "repo/taken/fp32-opt").mkdir(parents=True)
    assert "--force" in _fails("--config", "bert-tiny", *common, "--name", "taken")
    # a work folder holding another run is not resumed with other settings
    work = tmp_path / "work"
    (work).mkdir()
    (work / "run.json").write_text(json.dumps({"base_model": "minilm"}))
    message = _fails("--config", "bert-tiny", *common, "--work", str(work))
    assert "--restart" in message and "base_model" in message


@pytest.mark.parametrize("command", ["finetune", "probe", "data"])
def test_commands_are_listed(command: str):
    done = bertserve_cli(command, "--help")
    assert done.returncode == 0 and "usage: bertserve " + command in done.stdout

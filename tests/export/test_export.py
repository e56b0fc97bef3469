"""Real exports checked against PyTorch: the bundled MiniLM, random configs, local folders."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from bertserve.export import (
    ExportError,
    NotBertError,
    PackageExistsError,
    ValidationError,
    export_model,
)
from bertserve.export import manifest as manifest_module
from bertserve.export import validate as validate_module
from bertserve.server.repository import VariantPackage, verify_package
from bertserve.variants import VARIANTS
from safetensors.numpy import load_file
from tokenizers import Tokenizer
from transformers import BertConfig, BertModel, BertTokenizerFast

MANIFEST_KEYS = {
    "format", "name", "variant", "precision", "architecture", "model_type", "num_layers",
    "hidden_size", "num_heads", "intermediate_size", "max_position_embeddings", "max_length",
    "vocab_size", "type_vocab_size", "lowercase", "random_weights", "source", "default_pooling",
    "opset", "inputs", "outputs", "files", "validation", "created", "exporter", "labels",
}  # fmt: skip


def _run(folder: Path, ids: list[list[int]]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    input_ids = np.array(ids, dtype=np.int64)
    feed = {
        "input_ids": input_ids,
        "attention_mask": (input_ids != 0).astype(np.int64),
        "token_type_ids": np.zeros_like(input_ids),
    }
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed), strict=True))


def test_i_love_paris_padded_to_seven(model_repo: Path, minilm_dir: Path) -> None:
    package = model_repo / "minilm" / "fp32"
    tokenizer = Tokenizer.from_file(str(package / "tokenizer.json"))
    tokenizer.enable_padding(length=7)
    encoding = tokenizer.encode("I love Paris")
    assert encoding.tokens == ["[CLS]", "i", "love", "paris", "[SEP]", "[PAD]", "[PAD]"]
    assert encoding.ids == [101, 1045, 2293, 3000, 102, 0, 0]
    assert encoding.attention_mask == [1, 1, 1, 1, 1, 0, 0]

    out = _run(package, [encoding.ids])
    assert out["last_hidden_state"].shape == (1, 7, 384)
    hidden = [out[f"hidden_states.{i}"] for i in range(7)]
    assert len([k for k in out if k.startswith("hidden_states.")]) == 7
    np.testing.assert_array_equal(hidden[-1], out["last_hidden_state"])

    weights = load_file(str(minilm_dir / "model.safetensors"))
    cls = out["last_hidden_state"][:, 0]
    pooler = np.tanh(cls @ weights["pooler.dense.weight"].T + weights["pooler.dense.bias"])
    np.testing.assert_allclose(out["pooler_output"], pooler, atol=1e-5)


def test_every_variant_matches_pytorch(model_repo: Path, minilm_dir: Path) -> None:
    model = BertModel.from_pretrained(minilm_dir, output_hidden_states=True).eval()
    texts = ["I love Paris", "A longer sentence, so that the first one is padded in the batch."]
    tokenizer = BertTokenizerFast.from_pretrained(model_repo / "minilm" / "fp32")
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = model(**batch)
    mask = batch["attention_mask"].numpy().astype(bool)
    ref_mean = (ref.last_hidden_state.numpy() * mask[..., None]).sum(1) / mask.sum(1)[:, None]
    for variant, atol in (("fp32", 1e-4), ("fp32-opt", 1e-4), ("int8", None)):
        out = _run(model_repo / "minilm" / variant, batch["input_ids"].tolist())
        if atol is not None:
            for i, expected in enumerate(ref.hidden_states):
                got = out[f"hidden_states.{i}"][mask]
                np.testing.assert_allclose(got, expected.numpy()[mask], atol=atol)
            np.testing.assert_allclose(out["pooler_output"], ref.pooler_output.numpy(), atol=atol)
        got_mean = (out["last_hidden_state"] * mask[..., None]).sum(1) / mask.sum(1)[:, None]
        cosine = (got_mean * ref_mean).sum(1) / (
            np.linalg.norm(got_mean, axis=1) * np.linalg.norm(ref_mean, axis=1)
        )
        assert cosine.min() > (0.99 if atol is None else 0.99999), variant


def test_manifest_describes_the_package(model_repo: Path) -> None:
    for variant in ("fp32", "fp32-opt", "int8"):
        folder = model_repo / "minilm" / variant
        manifest = json.loads((folder / "manifest.json").read_text())
        assert MANIFEST_KEYS <= set(manifest), MANIFEST_KEYS - set(manifest)
        assert manifest["variant"] == variant
        assert (manifest["num_layers"], manifest["hidden_size"], manifest["num_heads"]) == (
            6,
            384,
            12,
        )
        assert manifest["lowercase"] is True and manifest["random_weights"] is False
        assert manifest["default_pooling"] == "mean"  # a sentence-transformers checkpoint
        assert manifest["max_length"] == 512 and manifest["vocab_size"] == 30522
        assert manifest["outputs"][:2] == ["last_hidden_state", "pooler_output"]
        assert len(manifest["outputs"]) == 2 + 7
        assert {"model.onnx", "tokenizer.json", "config.json"} <= set(manifest["files"])
        verify_package(VariantPackage(variant, folder, manifest))  # what the server checks
        assert manifest["validation"]["passed"] is True
        validation = manifest["validation"]
        assert validation["flagged"] is False and validation["validated"] is True, validation
        # hard texts (one word, numbers, a URL, code, emoji, four scripts), alone and batched
        assert validation["cosine"]["mean"] >= 0.995
        assert validation["batch_invariance"]["max_abs"] <= 1e-3
        if variant == "int8":
            quantization = manifest["quantization"]
            assert "MatMulNBits" in quantization["method"]
            assert quantization["quantized"] == 6 * 3  # every MatMul; QKV is fused in Attention
            model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
            ops = {node.op_type for node in model.graph.node}
            assert (
                "MatMulNBits" in ops and "MatMul" not in ops and "DynamicQuantizeLinear" not in ops
            )
        # the server sets padding and truncation itself
        spec = json.loads((folder / "tokenizer.json").read_text())
        assert spec["padding"] is None and spec["truncation"] is None


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("tiny")
    loggers = [logging.getLogger(), logging.getLogger("onnxruntime.transformers")]
    levels = [(logger.level, list(logger.filters)) for logger in loggers]
    export_model(repo=repo, config="bert-tiny", variants=VARIANTS, progress=False)
    # the exporter quiets onnxruntime's loggers around its calls only
    assert [(logger.level, logger.filters) for logger in loggers] == levels
    return repo


def test_random_config_export_is_marked_random(tiny_repo: Path) -> None:
    for variant in VARIANTS:
        manifest = json.loads((tiny_repo / "bert-tiny" / variant / "manifest.json").read_text())
        assert manifest["random_weights"] is True
        assert manifest["source"] == "random:bert-tiny"
        assert manifest["default_pooling"] == "cls"  # not the vocabulary donor's (MiniLM: mean)
        assert (manifest["num_layers"], manifest["hidden_size"], manifest["num_heads"]) == (
            2,
            128,
            2,
        )
        assert manifest["intermediate_size"] == 512
    fp16 = json.loads((tiny_repo / "bert-tiny" / "fp16" / "manifest.json").read_text())
    assert fp16["precision"] == "fp16" and fp16["validation"]["ran"] is True
    assert fp16["validation"]["cosine"]["mean"] > 0.999
    out = _run(tiny_repo / "bert-tiny" / "fp16", [[101, 1045, 2293, 3000, 102]])
    assert out["last_hidden_state"].shape == (1, 5, 128) and len(out) == 2 + 3


def _tiny_cased_folder(folder: Path) -> Path:
    """A local cased BERT checkpoint: random weights, its own small cased WordPiece vocab."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "I", "love", "Paris", "i", "paris"]
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=False).save_pretrained(
        folder
    )
    shape = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64)
    config = BertConfig(vocab_size=len(vocab), max_position_embeddings=64, **shape)
    torch.manual_seed(1)
    BertModel(config).save_pretrained(folder)
    return folder


def test_a_local_cased_folder_exports(tmp_path: Path) -> None:
    folder = _tiny_cased_folder(tmp_path / "tiny-cased")
    (written,) = export_model(
        str(folder), repo=tmp_path / "repo", variants=["fp32"], progress=False
    )
    manifest = json.loads((written / "manifest.json").read_text())
    assert manifest["name"] == "tiny-cased" and manifest["lowercase"] is False
    assert manifest["max_length"] == 64 and manifest["default_pooling"] == "cls"
    tokenizer = Tokenizer.from_file(str(written / "tokenizer.json"))
    assert tokenizer.encode("I love Paris").tokens == ["[CLS]", "I", "love", "Paris", "[SEP]"]
    assert len(_run(written, [[2, 5, 6, 7, 3]])) == 2 + 4


def test_not_a_bert_folder(tmp_path: Path) -> None:
    (tmp_path / "roberta").mkdir()
    (tmp_path / "roberta" / "config.json").write_text('{"model_type": "roberta"}')
    with pytest.raises(NotBertError, match="roberta checkpoint; bertserve exports BERT"):
        export_model(str(tmp_path / "roberta"), repo=tmp_path / "repo", progress=False)
    with pytest.raises(NotBertError, match="no config.json"):
        export_model(str(tmp_path), repo=tmp_path / "repo", progress=False)


def test_corrupt_weights(tmp_path: Path) -> None:
    folder = _tiny_cased_folder(tmp_path / "broken")
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ExportError, match="cannot load the weights"):
        export_model(str(folder), repo=tmp_path / "repo", variants=["fp32"], progress=False)
    assert not (tmp_path / "repo" / "broken" / "fp32").exists()


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="unknown variant"):
        export_model("minilm", repo=tmp_path, variants=["int4"], progress=False)
    with pytest.raises(ExportError, match="unknown --config"):
        export_model(repo=tmp_path, config="bert-huge", progress=False)
    with pytest.raises(ExportError, match="not in the local Hugging Face cache|neither a local"):
        export_model("nobody/no-such-model", repo=tmp_path, progress=False)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ExportError, match="cannot write to the model repository"):
        export_model(repo=blocker / "repo", config="bert-tiny", variants=["fp32"], progress=False)


def test_existing_package_needs_force(tiny_repo: Path) -> None:
    with pytest.raises(PackageExistsError, match="--force"):
        export_model(repo=tiny_repo, config="bert-tiny", variants=["fp32"], progress=False)


def test_force_replaces_and_a_failed_export_leaves_nothing_half_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    export_model(repo=repo, config="bert-tiny", variants=["fp32"], progress=False)
    before = (repo / "bert-tiny" / "fp32" / "manifest.json").read_text()

    calls = []

    def interrupted(folder: Path, fields: dict) -> dict:
        calls.append(folder)
        if len(calls) == 2:  # the second variant's manifest: one package is already staged
            raise KeyboardInterrupt
        return real_write(folder, fields)

    real_write = manifest_module.write_manifest
    monkeypatch.setattr(manifest_module, "write_manifest", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_model(repo=repo, config="bert-tiny", variants=["fp32", "int8"], force=True,
                     progress=False)  # fmt: skip
    assert sorted(p.name for p in (repo / "bert-tiny").iterdir()) == ["fp32"]  # no temporaries
    assert (repo / "bert-tiny" / "fp32" / "manifest.json").read_text() == before
    assert not (repo / "bert-tiny" / "int8").exists()


def test_a_wrong_fp32_fails_loudly_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(validate_module.MAX_ABS_ERROR, "fp32", 0.0)  # any difference is "wrong"
    with pytest.raises(ValidationError, match="fp32 disagrees with PyTorch"):
        export_model(repo=tmp_path, config="bert-tiny", variants=["fp32"], progress=False)
    assert list((tmp_path / "bert-tiny").iterdir()) == []


def test_cli_export_and_help(tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "bertserve.client.cli"]
    tiny = ["export", "--config", "bert-tiny", "--repo", str(tmp_path)]
    help_text = subprocess.run(
        [*cli, "export", "--help"], capture_output=True, text=True, check=True
    )
    assert "--variants" in help_text.stdout and "RANDOMLY" in help_text.stdout
    done = subprocess.run(
        [*cli, *tiny, "--variants", "fp32,int8"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(tmp_path / "bert-tiny" / v) for v in ("fp32", "int8")]
    assert "validation of bert-tiny against PyTorch" in done.stderr
    again = subprocess.run(
        [*cli, *tiny, "--variants", "fp32"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert again.returncode == 1
    assert again.stderr.startswith("bertserve export: ") and "Traceback" not in again.stderr

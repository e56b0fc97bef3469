"""PyTorch BERT -> plain fp32 ONNX with every hidden state, through optimum's exporter.

A fine-tuned sequence classifier goes the same way, with its ``logits`` as one more output.
"""

from __future__ import annotations

import json
import logging
import types
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from bertserve.variants import CONFIGS
from optimum.exporters.onnx import onnx_export_from_model
from optimum.exporters.onnx.model_configs import BertOnnxConfig
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    PreTrainedTokenizerFast,
)
from transformers.utils import ModelOutput

from .errors import ExportError
from .sources import Source, check_is_bert

OPSET = 17
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
RANDOM_SEED = 0


CLASSIFICATION = "text-classification"


def output_names(num_layers: int, classifier: bool = False) -> list[str]:
    """The ONNX outputs: (logits,) last_hidden_state, pooler_output, hidden_states.0 .. L."""
    return [
        *(("logits",) if classifier else ()),
        "last_hidden_state",
        "pooler_output",
        *(f"hidden_states.{i}" for i in range(num_layers + 1)),
    ]


class BertWithHiddenStatesOnnxConfig(BertOnnxConfig):
    """optimum's BERT config, declaring the pooler and every hidden state as outputs (and the
    logits first, for the text-classification task)."""

    @property
    def outputs(self) -> dict[str, dict[int, str]]:
        tokens = {0: "batch_size", 1: "sequence_length"}
        outputs = {"logits": {0: "batch_size"}} if self.task == CLASSIFICATION else {}
        outputs.update(last_hidden_state=tokens, pooler_output={0: "batch_size"})
        for i in range(self._config.num_hidden_layers + 1):
            outputs[f"hidden_states.{i}"] = tokens
        return outputs


@dataclass
class ClassifierWithFeaturesOutput(ModelOutput):
    """Logits and every feature of one forward pass, in the order of the ONNX outputs."""

    logits: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


def _forward_with_features(
    self: BertForSequenceClassification,
    input_ids: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    token_type_ids: torch.Tensor | None = None,
    **_: object,
) -> ClassifierWithFeaturesOutput:
    out = self.bert(
        input_ids,
        attention_mask=attention_mask,
        token_type_ids=token_type_ids,
        output_hidden_states=True,
        return_dict=True,
    )
    return ClassifierWithFeaturesOutput(
        logits=self.classifier(self.dropout(out.pooler_output)),
        last_hidden_state=out.last_hidden_state,
        pooler_output=out.pooler_output,
        hidden_states=out.hidden_states,
    )


def with_features(model: BertForSequenceClassification) -> BertForSequenceClassification:
    """Make the classifier's forward also return what BertModel's does (same weights, no loss),
    so one exported graph serves Classify and Embed from the same pass. The instance keeps
    its transformers class, which optimum needs to recognise it."""
    model.forward = types.MethodType(_forward_with_features, model)  # type: ignore[method-assign]
    return model


def classifier_labels(folder: Path) -> list[str] | None:
    """The labels, by class id, of a sequence-classification checkpoint; None for others."""
    config = json.loads((folder / "config.json").read_text())
    architectures = config.get("architectures") or []
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        return None
    id2label = config.get("id2label") or {}
    return [str(id2label[key]) for key in sorted(id2label, key=int)]


def random_config(source: Source, **fields: object) -> BertConfig:
    """The BertConfig of Google's shape named by ``source.random_config`` (intermediate size
    4 x hidden), with the vocabulary size of the source's tokenizer folder, plus ``fields``."""
    layers, hidden, heads = CONFIGS[str(source.random_config)]
    vocab = json.loads((source.folder / "config.json").read_text())["vocab_size"]
    return BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        **fields,
    )


def load_model(source: Source) -> tuple[BertModel | BertForSequenceClassification, bool]:
    """The PyTorch model in eval mode with hidden states on; and whether its pooler was trained.

    A sequence-classification checkpoint loads with its head, its forward ``with_features``.
    """
    if source.random_config:
        config = random_config(source, output_hidden_states=True)
        torch.manual_seed(RANDOM_SEED)
        return BertModel(config).eval(), True
    check_is_bert(source.folder)
    classifier = classifier_labels(source.folder) is not None
    model_class = BertForSequenceClassification if classifier else BertModel
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, info = model_class.from_pretrained(
                source.folder, output_hidden_states=True, output_loading_info=True
            )
    except Exception as exc:  # noqa: BLE001 - corrupt weights surface as many exception types
        raise ExportError(f"cannot load the weights in {source.folder}: {exc}") from None
    pooler_trained = not any("pooler." in key for key in info["missing_keys"])
    return (with_features(model) if classifier else model).eval(), pooler_trained


def load_tokenizer(source: Source) -> PreTrainedTokenizerFast:
    """The fast tokenizer of the checkpoint (a tokenizer.json is what the server reads)."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.folder, use_fast=True)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"cannot load the tokenizer in {source.folder}: {exc}") from None
    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise ExportError(
            f"{source.folder} has no fast (Rust) tokenizer; bertserve needs tokenizer.json"
        )
    return tokenizer


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, folder: Path) -> None:
    """Write the tokenizer files, without the padding/truncation a checkpoint may carry.

    sentence-transformers exports pad every sequence to a fixed length and cut
    silently; the server sets both itself from the model's limits and the request.
    """
    tokenizer.save_pretrained(folder)
    tokenizer_json = folder / "tokenizer.json"
    spec = json.loads(tokenizer_json.read_text())
    spec["padding"] = None
    spec["truncation"] = None
    tokenizer_json.write_text(json.dumps(spec, ensure_ascii=False))


def export_fp32(model: BertModel | BertForSequenceClassification, folder: Path) -> Path:
    """Export model.onnx (fp32) into folder through optimum; returns the file."""
    classifier = isinstance(model, BertForSequenceClassification)
    task = CLASSIFICATION if classifier else "feature-extraction"
    onnx_config = BertWithHiddenStatesOnnxConfig(model.config, task=task)
    logging.getLogger("optimum").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_export_from_model(
            model,
            folder,
            opset=OPSET,
            task=task,
            custom_onnx_configs={"model": onnx_config},
            do_validation=False,  # ours covers every output and variant
            no_post_process=True,
        )
    path = folder / "model.onnx"
    if not path.is_file():
        raise ExportError(f"optimum wrote no model.onnx in {folder}")
    for stray in folder.iterdir():  # optimum also saves config and tokenizer: we write our own
        if stray.name not in ("model.onnx", "model.onnx_data"):
            stray.unlink()
    return path

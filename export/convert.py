"""PyTorch BERT -> plain fp32 ONNX with every hidden state, through optimum's exporter."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import torch
from optimum.exporters.onnx import onnx_export_from_model
from optimum.exporters.onnx.model_configs import BertOnnxConfig
from transformers import AutoTokenizer, BertConfig, BertModel, PreTrainedTokenizerFast

from .errors import ExportError
from .sources import CONFIGS, Source, check_is_bert

OPSET = 17
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
RANDOM_SEED = 0


def output_names(num_layers: int) -> list[str]:
    """The ONNX outputs: last_hidden_state, pooler_output, hidden_states.0 .. hidden_states.L."""
    return [
        "last_hidden_state",
        "pooler_output",
        *(f"hidden_states.{i}" for i in range(num_layers + 1)),
    ]


class BertWithHiddenStatesOnnxConfig(BertOnnxConfig):
    """optimum's BERT config, declaring the pooler and every hidden state as outputs."""

    @property
    def outputs(self) -> dict[str, dict[int, str]]:
        tokens = {0: "batch_size", 1: "sequence_length"}
        outputs = {"last_hidden_state": tokens, "pooler_output": {0: "batch_size"}}
        for i in range(self._config.num_hidden_layers + 1):
            outputs[f"hidden_states.{i}"] = tokens
        return outputs


def load_model(source: Source) -> tuple[BertModel, bool]:
    """The PyTorch model in eval mode with hidden states on; and whether its pooler was trained."""
    if source.random_config:
        layers, hidden, heads = CONFIGS[source.random_config]
        vocab = json.loads((source.folder / "config.json").read_text())["vocab_size"]
        config = BertConfig(
            vocab_size=vocab,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=4 * hidden,
            output_hidden_states=True,
        )
        torch.manual_seed(RANDOM_SEED)
        return BertModel(config).eval(), True
    check_is_bert(source.folder)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, info = BertModel.from_pretrained(
                source.folder, output_hidden_states=True, output_loading_info=True
            )
    except Exception as exc:  # noqa: BLE001 - corrupt weights surface as many exception types
        raise ExportError(f"cannot load the weights in {source.folder}: {exc}") from None
    pooler_trained = not any(key.startswith("pooler.") for key in info["missing_keys"])
    return model.eval(), pooler_trained


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


def export_fp32(model: BertModel, folder: Path) -> Path:
    """Export model.onnx (fp32) into folder through optimum; returns the file."""
    onnx_config = BertWithHiddenStatesOnnxConfig(model.config, task="feature-extraction")
    logging.getLogger("optimum").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_export_from_model(
            model,
            folder,
            opset=OPSET,
            task="feature-extraction",
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

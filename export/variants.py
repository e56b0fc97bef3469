"""Optimized variants of a plain fp32 model.onnx: fused fp32, int8 for CPUs, fp16 for CUDA."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers.optimizer import optimize_model

PRECISION = {"fp32": "fp32", "fp32-opt": "fp32", "int8": "int8", "fp16": "fp16"}


def _optimizer(fp32: Path, num_heads: int, hidden_size: int, use_gpu: bool):  # noqa: ANN202
    # use_gpu=True on a CPU-only onnxruntime logs an ERROR but fuses the same graph
    logging.getLogger("onnxruntime.transformers").setLevel(logging.CRITICAL)
    return optimize_model(
        str(fp32), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, use_gpu=use_gpu
    )


def write_fp32_opt(fp32: Path, out: Path, num_heads: int, hidden_size: int) -> dict[str, int]:
    """Fuse attention, LayerNorm and GELU; returns the fused operator counts."""
    model = _optimizer(fp32, num_heads, hidden_size, use_gpu=False)
    model.save_model_to_file(str(out))
    return {k: v for k, v in model.get_fused_operator_statistics().items() if v}


def write_fp16(fp32: Path, out: Path, num_heads: int, hidden_size: int) -> None:
    """Fused graph for CUDA with fp16 weights and math; inputs and outputs keep their types."""
    model = _optimizer(fp32, num_heads, hidden_size, use_gpu=True)
    model.convert_float_to_float16(keep_io_types=True)
    model.save_model_to_file(str(out))


def write_int8(fp32_opt: Path, out: Path) -> list[str]:
    """Dynamic int8 quantization of the fused graph; returns the MatMuls kept in fp32.

    Measured on MiniLM (mean-pooled cosine to fp32, worst of 10 sentences):
    per-tensor 0.94, per-channel 0.985, per-channel with the feed-forward output
    MatMuls (fed by GELU, whose activations have outliers) kept in fp32 0.992.
    The fused Attention nodes stay fp32 too, which keeps their QKV exact.
    """
    graph = onnx.load(str(fp32_opt), load_external_data=False).graph
    producer = {name: node for node in graph.node for name in node.output}
    after_gelu = [
        node.name
        for node in graph.node
        if node.op_type == "MatMul"
        and (source := producer.get(node.input[0])) is not None
        and source.op_type in ("BiasGelu", "Gelu", "FastGelu")
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger().setLevel(
            logging.ERROR
        )  # the quantizer logs its advice at WARNING on root
        quantize_dynamic(
            str(fp32_opt),
            str(out),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=after_gelu,
            # the fused nodes' output types are unknown to the quantizer's shape inference
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    return after_gelu

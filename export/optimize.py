"""Optimized variants of a plain fp32 model.onnx: fused fp32, int8 for CPUs, fp16 for CUDA."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers.optimizer import optimize_model


@contextmanager
def _quiet(name: str, level: int) -> Iterator[None]:
    """During one call, the logger ``name`` and its children drop records under ``level``."""
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)


@contextmanager
def _quiet_root(level: int) -> Iterator[None]:
    """During one call, records logged on the root logger itself (``logging.warning(...)``)
    under ``level`` are dropped; other loggers' records still pass through it."""

    def keep(record: logging.LogRecord) -> bool:
        return record.levelno >= level

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def _optimizer(fp32: Path, num_heads: int, hidden_size: int, use_gpu: bool):  # noqa: ANN202
    # use_gpu=True on a CPU-only onnxruntime logs an ERROR but fuses the same graph
    with _quiet("onnxruntime.transformers", logging.CRITICAL):
        return optimize_model(
            str(fp32),
            model_type="bert",
            num_heads=num_heads,
            hidden_size=hidden_size,
            use_gpu=use_gpu,
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

    Chosen by measurement on mixed text (English prose and tweets, accents, Korean, Japanese,
    emoji, a 180-token run-on; worst mean-pooled cosine to PyTorch, each text alone and in
    length-sorted batches) on an AVX2 CPU, with single-thread CPU time of sorted batches:

    ========================================  ==========  ===============  ===========
    recipe                                    MiniLM cos  bert-base cos    CPU speed
    ========================================  ==========  ===============  ===========
    per channel, post-GELU MatMuls in fp32    0.967       0.9994           1.15x/1.23x
    + reduce_range (7-bit weights)            0.990       0.9997           1.16x/1.24x
    + the first layer's MatMuls in fp32       0.992       0.9997           1.18x/1.21x
    all MatMuls, reduce_range                 0.980       --               1.33x
    static QDQ, calibrated on real text       0.9996      --               0.85x
    ========================================  ==========  ===============  ===========

    reduce_range matters on CPUs without VNNI: their u8 x s8 kernels (vpmaddubsw) add pairs
    of products in 16 bits and saturate with 8-bit weights; 7-bit weights cannot, so the model
    is accurate on every CPU, not only on the one it was validated on. GELU's outputs and the
    first layer (every later layer builds on its error) are the most sensitive; the fused
    Attention nodes are not MatMuls and keep their QKV in fp32 too.
    """
    graph = onnx.load(str(fp32_opt), load_external_data=False).graph
    producer = {name: node for node in graph.node for name in node.output}
    kept = [
        node.name
        for node in graph.node
        if node.op_type == "MatMul"
        and (
            "/layer.0/" in node.name
            or (
                (source := producer.get(node.input[0])) is not None
                and source.op_type in ("BiasGelu", "Gelu", "FastGelu")
            )
        )
    ]
    # the quantizer logs its advice at WARNING on the root logger
    with warnings.catch_warnings(), _quiet_root(logging.ERROR):
        warnings.simplefilter("ignore")
        quantize_dynamic(
            str(fp32_opt),
            str(out),
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=True,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=kept,
            # the fused nodes' output types are unknown to the quantizer's shape inference
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    return kept

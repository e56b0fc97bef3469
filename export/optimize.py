"""Optimized variants of a plain fp32 model.onnx: fused fp32, batch-invariant int8, CUDA fp16."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
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


def write_int8(fp32_opt: Path, out: Path) -> dict:
    """int8 that does not depend on its batch: every MatMul with a constant weight becomes
    onnxruntime's ``MatMulNBits`` (8-bit weights, symmetric, blocks of 32 along K) with
    ``accuracy_level=4``, which quantizes the activations to int8 per row, block by block, and
    multiplies in int8. Returns the manifest's ``quantization`` record.

    Dynamic quantization (``quantize_dynamic``, the previous recipe) scales a MatMul's
    activations by the largest value of the whole batch, so a text's vector moves with its
    neighbours. Here each token row has its own scales: a text gives the same vector alone and
    in any batch. The fused Attention nodes are not MatMuls and keep their QKV in fp32.

    Measured on this repository's MiniLM against fp32-opt (``THREADS=1`` and ``THREADS=2
    python scripts/int8_recipes.py .cache/test-models/<key>/minilm``, onnxruntime 1.32): the 30
    validation texts, each alone and in three mixed batches; cosine: worst mean-pooled to fp32;
    alone≠batch: max |Δ| of a mean-pooled unit vector, alone against batched; speed: fp32-opt's
    CPU time over the recipe's for the texts x 6 in length-sorted batches of 8 (best of 5, same
    threads), the range over 2-4 runs each. AMD EPYC, ``lscpu``
    flags avx2 fma avx512f avx512bw avx512vl avx512_vnni avx_vnni: a VNNI CPU, though the
    machine was first described as AVX2-only. Two cores shared with five other engineers' jobs:
    load average 0.7 to 12 (``uptime``), so speeds move by about ±10% between runs::

        recipe                                     1 thread   2 threads  cosine    alone≠batch
        dynamic, per channel, 7-bit (previous)     1.17-1.27x 1.18-1.28x 0.98405   3.8e-02
        the same, one text per run (unbatched)     0.89x      0.75x      0.98405   0
        MatMulNBits 8-bit, block 32, acc. 4 (this) 1.01-1.16x 1.04-1.28x 0.99897   0
        MatMulNBits 8-bit, block 16, acc. 4        1.00-1.10x 1.10-1.12x 0.99922   0
        MatMulNBits 8-bit, block 64, acc. 4        1.04-1.24x 1.16-1.20x 0.99850   0
        MatMulNBits 8-bit, block 128, acc. 4       1.12-1.21x 1.09-1.20x 0.99729   4.6e-03
        MatMulNBits 8-bit, acc. 0 (weight-only)    0.65-0.82x 0.72-0.79x >=0.99938 0
        block 32, layer 0 + post-GELU in fp32      0.93-1.09x 1.00-1.10x 0.99929   0
        static QDQ u8/s8, layer 0 + post-GELU fp32 0.92-1.01x 1.04x      0.99914   0

    Blocks of 128 move with their batch (4.6e-3; onnxruntime's kernel for that block size does
    not keep rows apart here); weight-only 8-bit (accuracy level 0) dequantizes to fp32 and is
    slower than fp32-opt; static QDQ with unsigned activations, calibrated (min-max) on the
    validation texts, is batch-invariant and accurate but gains nothing here; dynamic int8 run
    one text at a time (fastembed's way out) is invariant but slower than batched fp32-opt.
    Blocks of 32 keep the best accuracy of the fast invariant recipes. What int8 buys on this
    CPU is small, 0-28%: it stays opt-in (the server's default never depends on speed). Not
    measured: an AVX2 CPU without VNNI, where onnxruntime runs other int8 kernels.
    Reproduce: ``python scripts/int8_recipes.py <repo>/minilm`` (see its docstring).
    """
    from onnx import helper, numpy_helper

    model = onnx.load(str(fp32_opt))
    graph = model.graph
    weights = {tensor.name: tensor for tensor in graph.initializer}
    nodes, quantized = [], []
    for node in graph.node:
        weight = weights.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight is None or len(weight.dims) != 2:
            nodes.append(node)
            continue
        packed, scales = _quantize_blocks(numpy_helper.to_array(weight).astype(np.float32))
        k, n = weight.dims
        graph.initializer.extend(
            [
                numpy_helper.from_array(packed, f"{weight.name}_q8"),
                numpy_helper.from_array(scales, f"{weight.name}_q8_scales"),
            ]
        )
        nodes.append(
            helper.make_node(
                "MatMulNBits",
                [node.input[0], f"{weight.name}_q8", f"{weight.name}_q8_scales"],
                list(node.output),
                name=f"{node.name}_q8",
                domain="com.microsoft",
                K=k,
                N=n,
                bits=8,
                block_size=INT8_BLOCK,
                accuracy_level=4,  # int8 activations, quantized per row and block
            )
        )
        quantized.append(node.name)
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    kept = [tensor for tensor in graph.initializer if tensor.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if not any(opset.domain == "com.microsoft" for opset in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(out))
    return {
        "method": "MatMulNBits, accuracy_level 4 (activations int8 per row and block)",
        "weights": f"int8 symmetric, blocks of {INT8_BLOCK} along K",
        "quantized": len(quantized),
        "kept_fp32": ["Attention (fused QKV)", "Gemm (pooler)"],
    }


INT8_BLOCK = 32  # blocks of 128 were faster but not batch-invariant (see write_int8)


def _quantize_blocks(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, N) fp32 -> MatMulNBits' (N, K/block, block) uint8 with zero point 128 and (N * K/block)
    fp32 scales: symmetric, each block's largest magnitude maps to 127."""
    k, n = weight.shape
    blocks = -(-k // INT8_BLOCK)
    padded = np.zeros((blocks * INT8_BLOCK, n), dtype=np.float32)
    padded[:k] = weight
    columns = padded.T.reshape(n, blocks, INT8_BLOCK)
    scales = np.abs(columns).max(axis=2) / 127.0
    scales[scales == 0] = 1.0
    quantized = np.clip(np.rint(columns / scales[..., None]), -127, 127) + 128
    return quantized.astype(np.uint8), scales.reshape(-1).astype(np.float32)

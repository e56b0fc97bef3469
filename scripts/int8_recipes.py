"""int8 recipes against fp32-opt: speed, worst cosine, and whether a text's vector depends on
its batch. The measurements behind ``export/variants.py``'s ``write_int8``.

    THREADS=1 python scripts/int8_recipes.py MODEL_DIR [NAME_FILTER,...]

MODEL_DIR holds the exported ``fp32``, ``fp32-opt`` and (optional) ``int8`` packages, e.g.
``.cache/test-models/<key>/minilm``. For each recipe it prints: CPU time of the validation texts
x 6 in length-sorted batches of 8 (best of 5, ``THREADS`` intra-op threads) and its speed
against fp32-opt; the worst mean-pooled cosine to the fp32 package over the validation texts,
each alone and batched; and the largest change of a mean-pooled unit vector between a text
alone and the same text in three mixed batches (all texts, reversed, sorted batches of 8).
Candidate models are written to /tmp/int8-recipes. Print ``lscpu`` and ``uptime`` beside it.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from bertserve.export import variants
from bertserve.export.validate import SENTENCES
from onnx import helper, numpy_helper
from tokenizers import Tokenizer

OUT = Path("/tmp/int8-recipes")
THREADS = int(os.environ.get("THREADS", "1"))


def matmul_nbits(src: Path, dst: Path, block: int, accuracy_level: int, keep=()) -> None:  # noqa: ANN001
    """Every MatMul with a 2-D constant weight -> MatMulNBits, 8-bit symmetric blocks."""
    from onnxruntime.capi._pybind_state import quantize_matmul_8bits

    model = onnx.load(str(src))
    graph = model.graph
    weights = {tensor.name: tensor for tensor in graph.initializer}
    nodes = []
    for node in graph.node:
        weight = weights.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight is None or node.name in keep or len(weight.dims) != 2:
            nodes.append(node)
            continue
        b = numpy_helper.to_array(weight).astype(np.float32)
        k, n = b.shape
        blocks = -(-k // block)
        b = np.ascontiguousarray(np.pad(b, ((0, blocks * block - k), (0, 0))))
        packed = np.zeros((n, blocks, block), np.uint8)
        zero_points = np.zeros((n, blocks), np.uint8)
        scales = np.zeros((n, blocks), np.float32)
        quantize_matmul_8bits(packed, b, scales, zero_points, block, n, k, True)
        graph.initializer.extend(
            [
                numpy_helper.from_array(packed, weight.name + "_q"),
                numpy_helper.from_array(scales, weight.name + "_s"),
            ]
        )
        nodes.append(
            helper.make_node(
                "MatMulNBits",
                [node.input[0], weight.name + "_q", weight.name + "_s"],
                list(node.output),
                name=node.name + "_q",
                domain="com.microsoft",
                K=k,
                N=n,
                bits=8,
                block_size=block,
                accuracy_level=accuracy_level,
            )
        )
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    kept = [tensor for tensor in graph.initializer if tensor.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.save(model, str(dst))


def sensitive_matmuls(src: Path) -> list[str]:
    """The previous recipe's fp32 MatMuls: the first layer's and those after GELU."""
    graph = onnx.load(str(src), load_external_data=False).graph
    producer = {name: node for node in graph.node for name in node.output}
    return [
        node.name
        for node in graph.node
        if node.op_type == "MatMul"
        and (
            "/layer.0/" in node.name
            or getattr(producer.get(node.input[0]), "op_type", "") in ("BiasGelu", "Gelu")
        )
    ]


class Bench:
    """The texts, their batches and the fp32 reference vectors."""

    def __init__(self, package: Path) -> None:
        self.tokenizer = Tokenizer.from_file(str(package / "fp32" / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(256)
        corpus = sorted(list(SENTENCES) * 6, key=lambda t: len(self.tokenizer.encode(t).ids))
        self.batches = [self.feed(corpus[i : i + 8]) for i in range(0, len(corpus), 8)]
        self.corpus = corpus

    def feed(self, texts: list[str]) -> dict[str, np.ndarray]:
        encodings = self.tokenizer.encode_batch(list(texts))
        ids = np.zeros((len(encodings), max(len(e.ids) for e in encodings)), np.int64)
        mask = np.zeros_like(ids)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = encoding.ids
            mask[row, : len(encoding.ids)] = 1
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}

    def unit_means(self, session: ort.InferenceSession, texts: list[str]) -> np.ndarray:
        feed = self.feed(texts)
        hidden = session.run(["last_hidden_state"], feed)[0].astype(np.float64)
        mask = feed["attention_mask"][..., None]
        mean = (hidden * mask).sum(1) / mask.sum(1)
        return mean / np.linalg.norm(mean, axis=1, keepdims=True)

    def vectors(self, session: ort.InferenceSession) -> tuple[np.ndarray, list[np.ndarray]]:
        """(each text alone, [the same rows in each of three mixed batches])."""
        texts = list(SENTENCES)
        alone = np.concatenate([self.unit_means(session, [t]) for t in texts])
        together = self.unit_means(session, texts)
        reversed_ = self.unit_means(session, texts[::-1])[::-1]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        eights = np.zeros_like(alone)
        for start in range(0, len(order), 8):
            rows = order[start : start + 8]
            eights[rows] = self.unit_means(session, [texts[r] for r in rows])
        return alone, [together, reversed_, eights]

    def cpu_seconds(
        self, session: ort.InferenceSession, repeats: int = 5, one_by_one: bool = False
    ) -> float:
        """CPU time of the corpus in sorted batches of 8 (or one text per run), best of all."""
        runs = [self.feed([t]) for t in self.corpus] if one_by_one else self.batches
        for batch in runs[:3]:
            session.run(["last_hidden_state"], batch)
        best = float("inf")
        for _ in range(repeats):
            start = time.process_time()
            for batch in runs:
                session.run(["last_hidden_state"], batch)
            best = min(best, time.process_time() - start)
        return best


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def recipes(package: Path) -> dict[str, Callable[[], Path]]:
    opt = package / "fp32-opt" / "model.onnx"

    def built(name: str, make: Callable[[Path], None]) -> Callable[[], Path]:
        def path() -> Path:
            target = OUT / f"{name}.onnx"
            if not target.exists():
                make(target)
            return target

        return path

    found = {
        "fp32 (reference)": lambda: package / "fp32" / "model.onnx",
        "fp32-opt": lambda: opt,
        "int8 as exported": lambda: package / "int8" / "model.onnx",
        "write_int8 (this export)": built("write_int8", lambda t: variants.write_int8(opt, t)),
    }
    for block in (16, 32, 64, 128):
        for level in (4, 0):
            found[f"MatMulNBits 8-bit b{block} acc{level}"] = built(
                f"nbits_b{block}_acc{level}",
                lambda t, b=block, a=level: matmul_nbits(opt, t, b, a),
            )
    found["MatMulNBits 8-bit b32 acc4, sensitive in fp32"] = built(
        "nbits_b32_keep", lambda t: matmul_nbits(opt, t, 32, 4, sensitive_matmuls(opt))
    )
    found["static QDQ u8s8 (calibrated), sensitive in fp32"] = built(
        "static_qdq", lambda t: static_qdq(opt, t, sensitive_matmuls(opt), package)
    )
    return found


def static_qdq(src: Path, dst: Path, keep: list[str], package: Path) -> None:
    """Static QDQ, unsigned activations and signed per-channel weights, calibrated (min-max)
    on the validation texts alone and in sorted batches."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    bench = Bench(package)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter([bench.feed([t]) for t in SENTENCES] + bench.batches)

        def get_next(self) -> dict | None:
            return next(self.feeds, None)

    quantize_static(
        str(src),
        str(dst),
        Reader(),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["MatMul"],
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=keep,
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "WeightSymmetric": True},
    )


def main() -> None:
    package = Path(sys.argv[1])
    wanted = sys.argv[2].split(",") if len(sys.argv) > 2 else []
    OUT.mkdir(exist_ok=True)
    logging.getLogger().setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    ort.set_default_logger_severity(3)
    bench = Bench(package)
    reference = session(package / "fp32" / "model.onnx")
    ref_alone, ref_batched = bench.vectors(reference)
    print(f"threads={THREADS}, {len(SENTENCES)} texts; timing: {len(bench.corpus)} texts in "
          f"{len(bench.batches)} sorted batches of 8")  # fmt: skip
    base = None
    for name, make in recipes(package).items():
        if wanted and name != "fp32-opt" and not any(w in name for w in wanted):
            continue
        try:
            model = session(make())
        except Exception as error:  # noqa: BLE001 - a recipe the installed onnxruntime lacks
            print(f"{name:<48} FAILED {str(error).splitlines()[0][:150]}")
            continue
        alone, batched = bench.vectors(model)
        cosines = np.minimum((alone * ref_alone).sum(1), (batched[0] * ref_batched[0]).sum(1))
        moved = max(np.abs(alone - b).max() for b in batched)
        seconds = bench.cpu_seconds(model)
        base = seconds if name == "fp32-opt" else base
        if name == "int8 as exported" and moved > 1e-3:
            # fastembed's way out for dynamic int8: never batch, so no neighbour moves a text
            alone_s = bench.cpu_seconds(model, repeats=3, one_by_one=True)
            print(f"{name + ', one text per run':<48} cpu {alone_s:6.3f}s  {base / alone_s:5.2f}x")
        speed = base / seconds if base else float("nan")
        print(
            f"{name:<48} cpu {seconds:6.3f}s  {speed:5.2f}x  cos worst {cosines.min():.5f} "
            f"({SENTENCES[int(cosines.argmin())][:12]!r})  alone≠batch {moved:.1e}",
            flush=True,
        )


if __name__ == "__main__":
    main()

"""Reference computations and answer decoding for the server tests."""

from __future__ import annotations

import dataclasses
from functools import cache
from pathlib import Path

import grpc
import numpy as np
from bertserve.server.app import create_server
from bertserve.server.config import ServerConfig
from bertserve.v1 import bertserve_pb2 as pb
from bertserve.v1 import bertserve_pb2_grpc


def decode_tensor(tensor: pb.Tensor) -> np.ndarray:
    """A wire tensor as float32 (bfloat16 widened)."""
    shape = tuple(tensor.shape)
    if tensor.dtype == pb.DTYPE_FLOAT16:
        return np.frombuffer(tensor.data, "<f2").reshape(shape).astype(np.float32)
    if tensor.dtype == pb.DTYPE_BFLOAT16:
        bits = np.frombuffer(tensor.data, "<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    assert tensor.dtype == pb.DTYPE_FLOAT32, tensor.dtype
    return np.frombuffer(tensor.data, "<f4").reshape(shape)


def assemble(chunks: list[pb.EmbedResponse]) -> dict[str, np.ndarray]:
    """Every output of an answer (one or more chunks), pieces put together by row offset."""
    assert [c.chunk for c in chunks] == list(range(len(chunks)))
    assert chunks[-1].last and not any(c.last for c in chunks[:-1])
    pieces: dict[str, list[tuple[int, int, np.ndarray]]] = {}
    for chunk in chunks:
        for piece in chunk.outputs:
            pieces.setdefault(piece.name, []).append(
                (piece.row_offset, piece.total_rows, decode_tensor(piece.tensor))
            )
    outputs = {}
    for name, parts in pieces.items():
        parts.sort(key=lambda p: p[0])
        total = parts[0][1]
        offset = 0
        for row_offset, rows, array in parts:
            assert row_offset == offset and rows == total
            offset += array.shape[0]
        assert offset == total, name
        outputs[name] = np.concatenate([p[2] for p in parts])
    return outputs


@cache
def _session(model_path: str):
    import onnxruntime as ort

    return ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])


def reference_outputs(
    variant_dir: Path, ids: list[int], types: list[int] | None = None
) -> dict[str, np.ndarray]:
    """Every ONNX output of one unpadded sequence, batch dimension removed, float32."""
    session = _session(str(variant_dir / "model.onnx"))
    input_ids = np.array([ids], dtype=np.int64)
    feeds = {
        "input_ids": input_ids,
        "attention_mask": np.ones_like(input_ids),
        "token_type_ids": np.array([types], dtype=np.int64) if types else np.zeros_like(input_ids),
    }
    names = [o.name for o in session.get_outputs()]
    return {
        n: v[0].astype(np.float32) for n, v in zip(names, session.run(names, feeds), strict=True)
    }


def reference_ids(
    variant_dir: Path, text: str, pair: str | None = None
) -> tuple[list[int], list[int]]:
    """Ids and type ids from the tokenizer file with its stored padding and truncation removed."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(variant_dir / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    encoding = tokenizer.encode(text, pair) if pair else tokenizer.encode(text)
    return encoding.ids, encoding.type_ids


@dataclasses.dataclass
class InProcess:
    server: object
    port: int
    channel: grpc.aio.Channel
    stub: bertserve_pb2_grpc.BertServiceStub
    repo: Path


async def start_in_process(repo: Path, **config: object) -> InProcess:
    server, port = await create_server(ServerConfig(repo=repo, port=0, **config).validate())
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    return InProcess(server, port, channel, bertserve_pb2_grpc.BertServiceStub(channel), repo)

"""Tensors on the wire: raw little-endian bytes plus dtype and shape, to and from numpy."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from bertserve.v1 import bertserve_pb2 as pb

# bfloat16 has no numpy dtype: it travels as the upper 16 bits of a float32.
_NUMPY_DTYPES: dict[int, np.dtype] = {
    pb.DTYPE_FLOAT32: np.dtype("<f4"),
    pb.DTYPE_FLOAT16: np.dtype("<f2"),
    pb.DTYPE_BFLOAT16: np.dtype("<u2"),
    pb.DTYPE_INT32: np.dtype("<i4"),
    pb.DTYPE_INT64: np.dtype("<i8"),
}

DTYPE_NAMES: dict[str, int] = {
    "float32": pb.DTYPE_FLOAT32,
    "float16": pb.DTYPE_FLOAT16,
    "bfloat16": pb.DTYPE_BFLOAT16,
}


class TensorError(ValueError):
    """A tensor or a chunked answer that does not decode (dtype, shape or rows)."""


def bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    """uint16 bfloat16 bits -> float32 of the same shape (exact: a truncated float32)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def tensor_to_numpy(tensor: pb.Tensor, *, raw: bool = False) -> np.ndarray:
    """Decode one Tensor into a numpy array of its shape.

    float32/float16/int32/int64 keep their dtype; bfloat16 becomes float32 unless
    ``raw``, which returns its uint16 bits. The array is read-only, a view on the bytes.
    """
    dtype_code = tensor.dtype or pb.DTYPE_FLOAT32
    try:
        dtype = _NUMPY_DTYPES[dtype_code]
    except KeyError:
        raise TensorError(f"unknown tensor dtype {tensor.dtype}") from None
    shape = tuple(int(d) for d in tensor.shape)
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(tensor.data) != expected:
        raise TensorError(
            f"tensor of shape {shape} and dtype {pb.DType.Name(dtype_code)} needs "
            f"{expected} bytes, got {len(tensor.data)}"
        )
    array = np.frombuffer(tensor.data, dtype=dtype).reshape(shape)
    if dtype_code == pb.DTYPE_BFLOAT16 and not raw:
        return bfloat16_to_float32(array)
    return array


@dataclass
class _Rows:
    """The pieces of one named output, gathered until every row is there."""

    total_rows: int
    pieces: list[tuple[int, np.ndarray]] = field(default_factory=list)
    filled: int = 0


class ChunkAssembler:
    """Joins the chunks of one EmbedResponse answer into whole numpy outputs.

    Feed every chunk in order with :meth:`add`; when it returns True (the chunk
    marked ``last``), :meth:`outputs` gives ``{name: array}`` with all rows, and
    ``first`` holds the first chunk (lengths, truncated, timing).
    """

    def __init__(self) -> None:
        self.first: pb.EmbedResponse | None = None
        self._outputs: dict[str, _Rows] = {}
        self._next_chunk = 0
        self.done = False

    def add(self, chunk: pb.EmbedResponse) -> bool:
        """Take one chunk; True once the answer is complete."""
        if self.done:
            raise TensorError(f"answer {chunk.id!r}: chunk {chunk.chunk} after the last one")
        if chunk.chunk != self._next_chunk:
            raise TensorError(
                f"answer {chunk.id!r}: chunk {chunk.chunk} arrived, expected {self._next_chunk}"
            )
        self._next_chunk += 1
        if self.first is None:
            self.first = chunk
        for piece in chunk.outputs:
            rows = self._outputs.get(piece.name)
            array = tensor_to_numpy(piece.tensor)
            total = int(piece.total_rows) if piece.total_rows else array.shape[0]
            if rows is None:
                rows = self._outputs[piece.name] = _Rows(total_rows=total)
            elif rows.total_rows != total:
                raise TensorError(
                    f"output {piece.name!r}: total_rows changed from {rows.total_rows} to {total}"
                )
            offset = int(piece.row_offset)
            if array.ndim == 0 or offset + array.shape[0] > total:
                raise TensorError(
                    f"output {piece.name!r}: rows [{offset}, {offset + array.shape[0]}) "
                    f"outside its {total} rows"
                )
            rows.pieces.append((offset, array))
            rows.filled += array.shape[0]
        if chunk.last:
            self.done = True
        return self.done

    def outputs(self) -> dict[str, np.ndarray]:
        """Each named output whole, rows in order: ``{name: (total_rows, ...) array}``."""
        if not self.done:
            raise TensorError("the answer is not complete yet")
        result: dict[str, np.ndarray] = {}
        for name, rows in self._outputs.items():
            if rows.filled != rows.total_rows:
                raise TensorError(
                    f"output {name!r}: got {rows.filled} of its {rows.total_rows} rows"
                )
            if len(rows.pieces) == 1:
                result[name] = rows.pieces[0][1]
                continue
            rows.pieces.sort(key=lambda item: item[0])
            expected = 0
            for offset, array in rows.pieces:
                if offset != expected:
                    raise TensorError(f"output {name!r}: rows from {expected} missing or doubled")
                expected += array.shape[0]
            result[name] = np.concatenate([array for _, array in rows.pieces], axis=0)
        return result

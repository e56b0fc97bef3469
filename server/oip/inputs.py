"""Open Inference Protocol input tensors -> plain values, every shape and count checked (in
Python ints: no overflow) before any content is walked. No model needed.

``TEXT`` and ``TEXT_PAIR``: BYTES [batch] or [batch, 1]. ``input_ids``, ``attention_mask``,
``token_type_ids``: INT64 [batch, seq]. ``SPANS``: INT32 or INT64 [spans, 3], rows
[text, start, end) in Unicode code points (late chunking).
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
from bertserve.inference import grpc_service_pb2 as v2
from bertserve.server import triton
from bertserve.server.core.request import Tokens, TokenSequence
from bertserve.server.errors import InvalidArgument

TEXT_INPUTS = triton.TEXT_INPUTS
TOKEN_INPUTS = triton.TOKEN_INPUTS
SPANS = triton.SPANS
INPUTS = (*TEXT_INPUTS, *TOKEN_INPUTS, SPANS)
# the datatypes each input may have
DATATYPES = {
    **dict.fromkeys(TEXT_INPUTS, ("BYTES",)),
    **dict.fromkeys(TOKEN_INPUTS, ("INT64",)),
    SPANS: ("INT32", "INT64"),
}
SPAN_COLUMNS = ("text", "start", "end")


def _unpack_bytes(name: str, data: bytes, count: int) -> list[bytes]:
    """BYTES raw content: each element a 4-byte little-endian length, then its bytes. Walks at
    most ``count`` elements (the shape's count, already bounded)."""
    items, offset = [], 0
    while offset < len(data):
        if len(items) == count:
            raise InvalidArgument(
                f"{name}: raw content holds more than {count} elements, the shape says {count}"
            )
        if offset + 4 > len(data):
            raise InvalidArgument(f"{name}: raw content ends inside an element's 4-byte length")
        (size,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if offset + size > len(data):
            raise InvalidArgument(
                f"{name}: raw content element {len(items)} claims {size} bytes, only "
                f"{len(data) - offset} follow"
            )
        items.append(data[offset : offset + size])
        offset += size
    if len(items) != count:
        raise InvalidArgument(
            f"{name}: raw content holds {len(items)} elements, the shape says {count}"
        )
    return items


def input_size(request: v2.ModelInferRequest) -> int:
    """Bytes or elements the inputs carry, from lengths alone (to decide where to read them)."""
    size = sum(map(len, request.raw_input_contents))
    for tensor in request.inputs:
        contents = tensor.contents
        size += len(contents.bytes_contents) + 8 * len(contents.int64_contents)
        size += 4 * len(contents.int_contents)
    return size


def _check_shape(name: str, shape: list[int], max_batch: int) -> None:
    if name in TEXT_INPUTS:
        ok = len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)
        allowed = "[batch] or [batch, 1]"
    elif name == SPANS:
        ok = len(shape) == 2 and shape[1] == 3
        allowed = "[spans, 3] (rows [text, start, end))"
    else:
        ok, allowed = len(shape) == 2, "[batch, seq]"
    if not ok or any(d < 1 for d in shape):
        raise InvalidArgument(f"{name}: shape {shape}; allowed {allowed}, each at least 1")
    # SPANS' rows are bounded by the raw content's or the contents' length, checked next
    if name != SPANS and shape[0] > max_batch:
        raise InvalidArgument(
            f"{name}: shape {shape}: a batch of {shape[0]:,}; allowed 1..{max_batch:,} "
            "(max_request_sequences): split it over several requests"
        )


def _texts(name: str, tensor: Any, raw: bytes | None, shape: list[int]) -> list[str]:
    count = math.prod(shape)
    contents = tensor.contents.bytes_contents
    if raw is None and len(contents) != count:
        raise InvalidArgument(
            f"{name}: {len(contents)} elements in contents.bytes_contents, the shape "
            f"{shape} says {count}"
        )
    items = _unpack_bytes(name, raw, count) if raw is not None else list(contents)
    texts = []
    for i, item in enumerate(items):
        try:
            texts.append(item.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise InvalidArgument(
                f"not UTF-8 ({error}); allowed: UTF-8 text",
                ("texts" if name == "TEXT" else "pairs", i),
            ) from None
    return texts


def _integers(name: str, tensor: Any, raw: bytes | None, shape: list[int]) -> np.ndarray:
    count = math.prod(shape)
    datatype = tensor.datatype
    if raw is not None:
        itemsize = 4 if datatype == "INT32" else 8
        if len(raw) != count * itemsize:
            raise InvalidArgument(
                f"{name}: {len(raw)} bytes of raw content; shape {shape} of {datatype} needs "
                f"{count * itemsize}"
            )
        values = np.frombuffer(raw, dtype="<i4" if datatype == "INT32" else "<i8")
    else:
        field = "int_contents" if datatype == "INT32" else "int64_contents"
        contents = getattr(tensor.contents, field)
        if len(contents) != count:
            raise InvalidArgument(
                f"{name}: {len(contents)} elements in contents.{field}, the shape {shape} says "
                f"{count}"
            )
        values = np.asarray(contents, dtype=np.int64)
    return values.reshape(shape)


def read_inputs(
    request: v2.ModelInferRequest, max_batch: int, model: triton.V2Model | None = None
) -> dict[str, Any]:
    """Each input by name: a list of str (TEXT, TEXT_PAIR) or an int array (the token ids
    [batch, seq], SPANS [spans, 3]). Names are checked against ``model``'s inputs (every
    input when None)."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidArgument(
            f"raw_input_contents: {len(raw)} entries for {len(request.inputs)} inputs; allowed: "
            "one per input, in the order of inputs"
        )
    found: dict[str, Any] = {}
    for index, tensor in enumerate(request.inputs):
        name = tensor.name
        if model is not None:
            model.check_input(index, name[:64])
        elif name not in INPUTS:
            raise InvalidArgument(
                f"inputs[{index}].name={name[:64]!r}: not an input; allowed {INPUTS}"
            )
        if name in found:
            raise InvalidArgument(f"inputs[{index}]: {name} given twice; allowed once")
        allowed = DATATYPES[name]
        if tensor.datatype not in allowed:
            raise InvalidArgument(
                f"{name}: datatype {tensor.datatype[:64]!r}; allowed {' or '.join(allowed)}"
            )
        shape = list(tensor.shape)
        _check_shape(name, shape, max_batch)
        if raw and tensor.HasField("contents"):
            raise InvalidArgument(
                f"{name}: both contents and raw_input_contents given; allowed one of them"
            )
        data = raw[index] if raw else None
        read = _texts if name in TEXT_INPUTS else _integers
        found[name] = read(name, tensor, data, shape)
    return found


def tokens(inputs: dict[str, Any]) -> Tokens:
    """Token inputs as core sequences (views), the client's trailing padding dropped. Ranges
    are the core's to check."""
    ids = inputs["input_ids"]
    for name in TOKEN_INPUTS[1:]:
        if name in inputs and inputs[name].shape != ids.shape:
            raise InvalidArgument(
                f"{name}: shape {list(inputs[name].shape)}; allowed the shape of input_ids "
                f"{list(ids.shape)}"
            )
    mask, types = inputs.get("attention_mask"), inputs.get("token_type_ids")
    if mask is None:
        ends = [ids.shape[1]] * ids.shape[0]
    else:  # the last nonzero of each row (a row of zeros is kept whole: the core refuses it)
        nonzero = mask != 0
        last = ids.shape[1] - np.argmax(nonzero[:, ::-1], axis=1)
        ends = np.where(nonzero.any(axis=1), last, ids.shape[1]).tolist()
    return Tokens(
        [
            TokenSequence(
                ids[row, :end],
                None if mask is None else mask[row, :end],
                None if types is None else types[row, :end],
            )
            for row, end in enumerate(ends)
        ]
    )


def spans(values: np.ndarray) -> tuple[tuple[int, int, int], ...]:
    """SPANS rows as the core's (text, start, end); order, overlaps and bounds are the core's
    to check, negative values (which bertserve.v1's uint32 cannot carry) are refused here."""
    negative = np.argwhere(values < 0)
    if negative.size:
        row, column = (int(x) for x in negative[0])
        raise InvalidArgument(
            f"={int(values[row, column])}: negative; allowed 0 or more (rows [text, start, "
            "end) in Unicode code points)",
            ("spans", row, SPAN_COLUMNS[column]),
        )
    return tuple((int(t), int(s), int(e)) for t, s, e in values.tolist())

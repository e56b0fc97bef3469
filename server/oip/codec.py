"""Open Inference Protocol (KServe v2) protobuf <-> core types, with plain values: no model
needed. A v2 model's inputs and outputs are listed in one place, ``triton.V2Model`` (``MODEL``
and ``MODEL.features``); request parameters are read in one place, ``read_parameters``.

Inputs: ``TEXT`` (BYTES, [batch] or [batch, 1]) with an optional ``TEXT_PAIR``, or token ids
``input_ids`` (INT64 [batch, seq]) with optional ``attention_mask`` and ``token_type_ids``;
trailing positions whose attention mask is 0 are the client's padding and are dropped.
Outputs, computed only when asked for: ``sentence_embedding`` [batch, width],
``token_embeddings`` [batch, seq, width] and ``hidden_states.N`` [batch, seq, hidden] (padded
with zeros after each sequence's ``lengths``), ``hidden_states`` [batch, layer, seq, hidden]
(the layers of the ``layers`` parameter), ``lengths`` INT64 [batch], and for a classifier
``logits``, ``probabilities`` (FP32 [batch, labels]) and ``label`` (BYTES [batch]).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from bertserve.inference import grpc_service_pb2 as v2
from bertserve.server import triton
from bertserve.server.core.request import (
    MAX_LAYER_ENTRIES,
    Options,
    Request,
    Texts,
    Tokens,
    TokenSequence,
)
from bertserve.server.errors import Field, InvalidArgument

SERVICE_NAME = v2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
PLATFORM = triton.PLATFORM
EXTENSIONS = triton.EXTENSIONS

TEXT_INPUTS = ("TEXT", "TEXT_PAIR")
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
INPUTS = TEXT_INPUTS + TOKEN_INPUTS
CLASSIFIER_OUTPUTS = ("logits", "probabilities", "label")
FLOAT_TYPES = {"FP32": "float32", "FP16": "float16", "BF16": "bfloat16"}
POOLINGS = ("cls", "pooler", "mean", "max")
AGGREGATIONS = ("last", "concat_last_4", "sum_last_4", "mean_all")
# name -> (the InferParameter fields it may use, what it means)
PARAMETERS = {
    "pooling": (("string_param",), f"one of {list(POOLINGS)}"),
    "layers": (("string_param", "int64_param"), "'all', a layer or a list '-1,-2'"),
    "aggregation": (("string_param",), f"one of {list(AGGREGATIONS)}"),
    "normalize": (("bool_param",), "true or false"),
    "truncate": (("bool_param",), "true or false"),
    "datatype": (("string_param",), f"one of {list(FLOAT_TYPES)}"),
    "binary_data_output": (("bool_param",), "true (raw_output_contents) or false (contents)"),
}
# the core's option names -> v2 parameter names
PARAMETER_OF = {"aggregate": "aggregation", "dtype": "datatype"}


def field_name(field: Field) -> str:
    """A core field path in v2's words: ``input_ids[0][3]``, ``TEXT[2]``,
    ``parameters['layers']``."""
    head, rest = field[0], field[1:]
    if head in ("texts", "pairs"):
        return TEXT_INPUTS[head == "pairs"] + "".join(f"[{i}]" for i in rest)
    if head == "sequences":
        if len(rest) >= 2:
            return f"{rest[1]}[{rest[0]}]" + "".join(f"[{i}]" for i in rest[2:])
        return "input_ids"
    if head in ("id", "outputs"):
        return str(head)
    if head in ("model", "variant"):
        return "model_name" if head == "model" else "model_version"
    return f"parameters[{PARAMETER_OF.get(str(head), head)!r}]"


@dataclass(frozen=True)
class Parameters:
    """A ModelInfer request's parameters, checked."""

    pooling: str | None = None
    layers: tuple[int, ...] | None = None  # None: all
    aggregation: str = "last"
    normalize: bool = False
    truncate: bool = False
    datatype: str = "FP32"
    binary_data_output: bool = True


def _layers(value: str | int) -> tuple[int, ...] | None:
    if isinstance(value, int):
        return (value,)
    if value.strip() == "all":
        return None
    entries = value.count(",") + 1  # counted before the string is split
    if entries > MAX_LAYER_ENTRIES:
        raise InvalidArgument(
            f"{entries} entries; allowed at most {MAX_LAYER_ENTRIES}", ("layers",)
        )
    try:
        return tuple(int(x) for x in value.split(","))
    except ValueError:
        raise InvalidArgument(
            f"={value[:64]!r}: allowed 'all', a layer or a list such as '-1,-2'", ("layers",)
        ) from None


def read_parameters(parameters: Any) -> Parameters:
    """Parameters from ModelInferRequest.parameters; INVALID_ARGUMENT naming what is allowed."""
    values: dict[str, Any] = {}
    for name, parameter in parameters.items():
        if name in triton.IGNORED_PARAMETERS:
            continue
        if name not in PARAMETERS:
            raise InvalidArgument(
                f"parameters[{name[:64]!r}]: not a parameter of this server; allowed "
                f"{list(PARAMETERS)}"
            )
        kinds, meaning = PARAMETERS[name]
        kind = parameter.WhichOneof("parameter_choice")
        if kind not in kinds:
            raise InvalidArgument(
                f"parameters[{name!r}]: a {kind or 'empty'} value; allowed "
                f"{' or '.join(kinds)}: {meaning}"
            )
        value = getattr(parameter, kind)
        allowed = {"pooling": POOLINGS, "aggregation": AGGREGATIONS, "datatype": FLOAT_TYPES}
        if name in allowed and value not in allowed[name]:
            raise InvalidArgument(f"parameters[{name!r}]={value[:64]!r}: allowed {meaning}")
        values[name] = _layers(value) if name == "layers" else value
    result = Parameters(**values)
    if not result.binary_data_output and result.datatype != "FP32":
        raise InvalidArgument(
            f"parameters['binary_data_output']=false with datatype {result.datatype}: the "
            "protocol has no field for 16-bit floats; allowed: binary_data_output=true, or FP32"
        )
    return result


# -- tensors in ------------------------------------------------------------------------------


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
        size += len(tensor.contents.bytes_contents) + 8 * len(tensor.contents.int64_contents)
    return size


def read_inputs(
    request: v2.ModelInferRequest, max_batch: int, model: triton.V2Model | None = None
) -> dict[str, Any]:
    """Each input by name: a list of str (TEXT, TEXT_PAIR) or an int64 array [batch, seq].
    Shapes are checked (in Python ints: no overflow) before any content is walked; names
    against ``model``'s inputs (every input when None)."""
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
        datatype = "BYTES" if name in TEXT_INPUTS else "INT64"
        if tensor.datatype != datatype:
            raise InvalidArgument(f"{name}: datatype {tensor.datatype[:64]!r}; allowed {datatype}")
        shape = list(tensor.shape)
        ok = (
            (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1))
            if datatype == "BYTES"
            else len(shape) == 2
        )
        if not ok or any(d < 1 for d in shape):
            allowed = "[batch] or [batch, 1]" if datatype == "BYTES" else "[batch, seq]"
            raise InvalidArgument(f"{name}: shape {shape}; allowed {allowed}, each at least 1")
        if shape[0] > max_batch:
            raise InvalidArgument(
                f"{name}: shape {shape}: a batch of {shape[0]:,}; allowed 1..{max_batch:,} "
                "(max_request_sequences): split it over several requests"
            )
        count = math.prod(shape)
        if raw and tensor.HasField("contents"):
            raise InvalidArgument(
                f"{name}: both contents and raw_input_contents given; allowed one of them"
            )
        if datatype == "BYTES":
            contents = tensor.contents.bytes_contents
            if not raw and len(contents) != count:
                raise InvalidArgument(
                    f"{name}: {len(contents)} elements in contents.bytes_contents, the shape "
                    f"{shape} says {count}"
                )
            items = _unpack_bytes(name, raw[index], count) if raw else list(contents)
            texts = []
            for i, item in enumerate(items):
                try:
                    texts.append(item.decode("utf-8"))
                except UnicodeDecodeError as error:
                    raise InvalidArgument(
                        f"not UTF-8 ({error}); allowed: UTF-8 text",
                        ("texts" if name == "TEXT" else "pairs", i),
                    ) from None
            found[name] = texts
            continue
        if raw:
            if len(raw[index]) != count * 8:
                raise InvalidArgument(
                    f"{name}: {len(raw[index])} bytes of raw content; shape {shape} of INT64 "
                    f"needs {count * 8}"
                )
            values = np.frombuffer(raw[index], dtype="<i8")
        else:
            contents = tensor.contents.int64_contents
            if len(contents) != count:
                raise InvalidArgument(
                    f"{name}: {len(contents)} elements in contents.int64_contents, the shape "
                    f"{shape} says {count}"
                )
            values = np.asarray(contents, dtype=np.int64)
        found[name] = values.reshape(shape)
    return found


def _tokens(inputs: dict[str, Any]) -> Tokens:
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


def requested_outputs(
    request: v2.ModelInferRequest, model: triton.V2Model, num_layers: int
) -> dict[str, str]:
    """The outputs asked for, checked against ``model``'s: the name asked -> the output it is
    (hidden_states.-1 is the last layer's). None asked: the model's default outputs (the
    sentence embedding, or a classifier's label and probabilities)."""
    top = num_layers
    available = model.outputs
    names: dict[str, str] = {}
    for index, output in enumerate(request.outputs):
        asked = name = output.name
        if output.parameters:
            raise InvalidArgument(
                f"outputs[{index}] ({name[:64]}): parameters {sorted(output.parameters)[:8]} are "
                "not supported per output; allowed: none (set request parameters instead)"
            )
        layer = name.removeprefix("hidden_states.")
        if layer != name and layer.startswith("-") and layer[1:].isdigit():
            if int(layer) >= -(top + 1):
                name = f"hidden_states.{int(layer) % (top + 1)}"
        if name not in available:
            raise model.no_such_output(index, asked[:64])
        if name in names.values():
            raise InvalidArgument(f"outputs[{index}]: {name} asked for twice; allowed once")
        names[asked] = name
    if not names:
        names = {name: name for name in model.default_outputs}
    if list(names.values()) == ["lengths"]:
        raise InvalidArgument(
            "outputs: only lengths asked for; ask for a feature too (e.g. sentence_embedding)"
        )
    return names


def core_request(
    request: v2.ModelInferRequest,
    parameters: Parameters,
    names: list[str],
    variant: str,
    max_batch: int,
    model: triton.V2Model | None = None,
) -> Request:
    """The core request that answers a v2 request's outputs (``names``, checked) on
    ``model`` (None: any input, the request's model name)."""
    inputs = read_inputs(request, max_batch, model)
    if "sentence_embedding" not in names and parameters.normalize:
        raise InvalidArgument(
            "parameters['normalize']=true: normalizes sentence_embedding; ask for that output"
        )
    layers = list(parameters.layers or ()) if "hidden_states" in names else []
    all_layers = "hidden_states" in names and parameters.layers is None
    layers += [int(name.split(".")[1]) for name in names if "." in name]
    options = Options(
        token_embeddings="token_embeddings" in names,
        pooling=(parameters.pooling or "model") if "sentence_embedding" in names else "none",
        layers=tuple(layers),
        all_layers=all_layers,
        aggregate=parameters.aggregation,
        normalize=parameters.normalize,
        dtype=FLOAT_TYPES[parameters.datatype],
        truncate=parameters.truncate,
        logits=any(name in CLASSIFIER_OUTPUTS for name in names),
    )
    core_inputs: Texts | Tokens
    if "TEXT" in inputs:
        if "input_ids" in inputs:
            raise InvalidArgument("TEXT and input_ids both given; allowed one of them")
        pairs = inputs.get("TEXT_PAIR")
        if pairs is not None and len(pairs) != len(inputs["TEXT"]):
            raise InvalidArgument(
                f"TEXT_PAIR: {len(pairs)} texts for {len(inputs['TEXT'])} in TEXT; allowed one "
                "per text of TEXT"
            )
        core_inputs = Texts(inputs["TEXT"], pairs)
    elif "input_ids" in inputs:
        if "TEXT_PAIR" in inputs:
            raise InvalidArgument("TEXT_PAIR without TEXT; allowed only beside TEXT")
        core_inputs = _tokens(inputs)
    elif model is not None and not model.features:
        raise InvalidArgument(
            f"no TEXT among the inputs {list(inputs)}; model {model.name!r} takes TEXT "
            "(BYTES [batch] or [batch, 1])"
        )
    else:
        raise InvalidArgument(
            f"no TEXT and no input_ids among the inputs {list(inputs)}; allowed TEXT (BYTES, "
            "optional TEXT_PAIR) or input_ids (INT64, optional attention_mask, token_type_ids)"
        )
    name = request.model_name if model is None else model.model
    return Request(core_inputs, options, request.id, name, variant)

"""Open Inference Protocol (KServe v2) protobuf <-> core types, with plain values: no model
needed. A v2 model's inputs and outputs are listed in one place, ``triton.V2Model`` (``MODEL``
and ``MODEL.features``); request parameters are read in one place, ``read_parameters``.

Inputs (server/oip/inputs.py): ``TEXT`` (BYTES, [batch] or [batch, 1]) with an optional
``TEXT_PAIR``, or token ids ``input_ids`` (INT64 [batch, seq]) with optional ``attention_mask``
and ``token_type_ids``; trailing positions whose attention mask is 0 are the client's padding
and are dropped; ``SPANS`` (INT32 or INT64 [spans, 3]) for late chunking.
Outputs, computed only when asked for: ``sentence_embedding`` [batch, width],
``token_embeddings`` [batch, seq, width] and ``hidden_states.N`` [batch, seq, hidden] (padded
with zeros after each sequence's ``lengths``), ``hidden_states`` [batch, layer, seq, hidden]
(the layers of the ``layers`` parameter), ``lengths`` INT64 [batch], and for a classifier
``logits``, ``probabilities`` (FP32 [batch, labels]) and ``label`` (BYTES [batch]).

Long documents (bertserve.v1's LongText): parameters ``long_text`` (truncate, error, chunk),
``chunk_tokens``, ``chunk_overlap``, ``chunk_pooling``, ``split``; outputs
``chunk_embeddings`` [chunks, width] with ``chunk_spans`` INT32 [chunks, 3] (asking for either
is bertserve.v1's return_chunks), and ``span_embeddings`` [spans, width] with ``span_offsets``
INT32 [spans, 3] (late chunking: the SPANS input or ``split``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bertserve.inference import grpc_service_pb2 as v2
from bertserve.server import triton
from bertserve.server.core.request import (
    CHUNK_POOLINGS,
    MAX_LAYER_ENTRIES,
    Options,
    Request,
    Texts,
    Tokens,
)
from bertserve.server.errors import Field, InvalidArgument
from bertserve.server.oip.inputs import SPAN_COLUMNS, SPANS, TEXT_INPUTS, read_inputs, spans, tokens

SERVICE_NAME = v2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
PLATFORM = triton.PLATFORM
EXTENSIONS = triton.EXTENSIONS

CLASSIFIER_OUTPUTS = ("logits", "probabilities", "label")
FLOAT_TYPES = {"FP32": "float32", "FP16": "float16", "BF16": "bfloat16"}
LONG_TEXTS = ("truncate", "error", "chunk")  # absent: as ``truncate`` says
SPLITS = ("sentences",)
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
    "long_text": (("string_param",), f"one of {list(LONG_TEXTS)}"),
    "chunk_tokens": (
        ("int64_param",),
        "0 (the largest: ModelConfig's chunk_tokens) or 1 up to that, content tokens per window",
    ),
    "chunk_overlap": (
        ("int64_param",),
        "0 up to chunk_tokens - 1, tokens consecutive windows share (unset: chunk_tokens / 8)",
    ),
    "chunk_pooling": (("string_param",), f"one of {list(CHUNK_POOLINGS)}"),
    "split": (("string_param",), f"one of {list(SPLITS)}"),
}
# the values a string parameter allows
ALLOWED = {
    "pooling": POOLINGS,
    "aggregation": AGGREGATIONS,
    "datatype": tuple(FLOAT_TYPES),
    "long_text": LONG_TEXTS,
    "chunk_pooling": CHUNK_POOLINGS,
    "split": SPLITS,
}
# the core's option names -> v2 parameter names
PARAMETER_OF = {"aggregate": "aggregation", "dtype": "datatype"}
# the core's options that v2 asks for with outputs rather than parameters
OUTPUT_OF = {"return_chunks": "chunk_embeddings", "logits": "logits"}
CHUNK_OUTPUTS = ("chunk_embeddings", "chunk_spans")
SPAN_OUTPUTS = ("span_embeddings", "span_offsets")


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
    if head == "spans":  # ("spans", 3, "end") -> SPANS[3][2]
        columns = [SPAN_COLUMNS.index(i) if isinstance(i, str) else i for i in rest]
        return SPANS + "".join(f"[{i}]" for i in columns)
    if head in OUTPUT_OF:
        return f"outputs {OUTPUT_OF[str(head)]}"
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
    long_text: str = ""
    chunk_tokens: int = 0
    chunk_overlap: int | None = None  # None: chunk_tokens / 8
    chunk_pooling: str = "mean"
    split: str = ""


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
        if name in ALLOWED and value not in ALLOWED[name]:
            raise InvalidArgument(f"parameters[{name!r}]={value[:64]!r}: allowed {meaning}")
        if name.startswith("chunk_") and kind == "int64_param" and value < 0:
            raise InvalidArgument(f"parameters[{name!r}]={value}: negative; allowed {meaning}")
        values[name] = _layers(value) if name == "layers" else value
    result = Parameters(**values)
    if not result.binary_data_output and result.datatype != "FP32":
        raise InvalidArgument(
            f"parameters['binary_data_output']=false with datatype {result.datatype}: the "
            "protocol has no field for 16-bit floats; allowed: binary_data_output=true, or FP32"
        )
    return result


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
        if model.features and _late_chunking(request):  # what SPANS or split are for
            names.update((name, name) for name in SPAN_OUTPUTS)
    if list(names.values()) == ["lengths"]:
        raise InvalidArgument(
            "outputs: only lengths asked for; ask for a feature too (e.g. sentence_embedding)"
        )
    return names


def _late_chunking(request: v2.ModelInferRequest) -> bool:
    """Whether the request sends spans (SPANS, or the split parameter)."""
    return "split" in request.parameters or any(t.name == SPANS for t in request.inputs)


def _long_text(
    parameters: Parameters, names: list[str], inputs: dict[str, Any], model: Any
) -> dict[str, Any]:
    """The long-document options: parameters, SPANS, and the outputs that ask for them."""
    given = inputs.get(SPANS)
    late = given is not None or bool(parameters.split)
    asked = [name for name in names if name in SPAN_OUTPUTS]
    if late and not asked:
        where = "SPANS" if given is not None else "parameters['split']"
        if model is not None and not model.features:
            raise InvalidArgument(
                f"{where}: late chunking answers span_embeddings, an output of model "
                f"{model.other()!r}, not of {model.name!r}; allowed: send the request there"
            )
        raise InvalidArgument(
            f"{where} given, but no span output asked for; allowed: ask for span_embeddings "
            "(and span_offsets), or send no spans"
        )
    chunks = [name for name in names if name in CHUNK_OUTPUTS]
    if chunks and parameters.long_text != "chunk":
        raise InvalidArgument(
            f"outputs: {chunks[0]} asked for without parameters['long_text']='chunk'; allowed "
            "only with it"
        )
    if asked and not late:
        raise InvalidArgument(
            f"outputs: {asked[0]} asked for without spans; allowed: send the SPANS input "
            "(INT32 or INT64 [spans, 3], rows [text, start, end)) or parameters['split']="
            "'sentences'"
        )
    return {
        "long_text": parameters.long_text,
        "chunk_tokens": parameters.chunk_tokens,
        "chunk_overlap": parameters.chunk_overlap,
        "chunk_pooling": parameters.chunk_pooling,
        "return_chunks": bool(chunks),
        "spans": () if given is None else spans(given),
        "split": parameters.split,
    }


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
    long_text = _long_text(parameters, names, inputs, model)
    # chunk_embeddings are pooled as the sentence embedding is
    pooled = "sentence_embedding" in names or long_text["return_chunks"]
    options = Options(
        token_embeddings="token_embeddings" in names,
        pooling=(parameters.pooling or "model") if pooled else "none",
        layers=tuple(layers),
        all_layers=all_layers,
        aggregate=parameters.aggregation,
        normalize=parameters.normalize,
        dtype=FLOAT_TYPES[parameters.datatype],
        truncate=parameters.truncate,
        logits=any(name in CLASSIFIER_OUTPUTS for name in names),
        **long_text,
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
        core_inputs = tokens(inputs)
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

"""The Open Inference Protocol (KServe v2, Triton's gRPC API): ``inference.GRPCInferenceService``
beside bertserve.v1, on the same server, models, batchers, limits and error table.

Each model of the repository is a v2 model; its versions are its variants (``fp32``,
``fp32-opt``, ``int8``, ...): the spec's version is how a caller picks one artifact of a model,
ModelReady and ModelMetadata take it, and ModelInferResponse names the one that answered.

Each model is two v2 models (server/triton.py): ``MODEL``, with the inputs and outputs of a
typical request (``TEXT`` in; ``sentence_embedding``, or a classifier's ``label`` and
``probabilities``, out), and ``MODEL.features`` with all of them, below.

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

import dataclasses
import importlib.metadata
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from bertserve.inference import grpc_service_pb2 as v2
from bertserve.inference import grpc_service_pb2_grpc
from bertserve.server import protocol, triton
from bertserve.server.errors import (
    FailedPrecondition,
    InvalidArgument,
    ModelNotFound,
    status_of,
)
from bertserve.server.features import FeatureSpec, convert, softmax
from bertserve.server.limits import check_sequence_count
from bertserve.server.models import EmbedResult, LoadedVariant
from bertserve.server.servicer import (
    Admit,
    BertServicer,
    admit_up_to,
    check_answer_size,
    check_classifier,
    unary,
)
from bertserve.server.statistics import STATISTICS
from bertserve.v1 import bertserve_pb2 as pb

SERVICE_NAME = v2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
PLATFORM = triton.PLATFORM
EXTENSIONS = triton.EXTENSIONS

TEXT_INPUTS = ("TEXT", "TEXT_PAIR")
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
INPUTS = TEXT_INPUTS + TOKEN_INPUTS
CLASSIFIER_OUTPUTS = ("logits", "probabilities", "label")
FLOAT_TYPES = {"FP32": "float32", "FP16": "float16", "BF16": "bfloat16"}
AGGREGATION_PB = {name: value for value, name in protocol.AGGREGATIONS.items() if value}
# name -> (the InferParameter fields it may use, what it means)
PARAMETERS = {
    "pooling": (("string_param",), f"one of {list(protocol.POOLING_PB)}"),
    "layers": (("string_param", "int64_param"), "'all', a layer or a list '-1,-2'"),
    "aggregation": (("string_param",), f"one of {list(AGGREGATION_PB)}"),
    "normalize": (("bool_param",), "true or false"),
    "truncate": (("bool_param",), "true or false"),
    "datatype": (("string_param",), f"one of {list(FLOAT_TYPES)}"),
    "binary_data_output": (("bool_param",), "true (raw_output_contents) or false (contents)"),
}
# Room in a message for everything but the tensors.
MESSAGE_MARGIN = 64 * 1024


@dataclass(frozen=True)
class Options:
    """A ModelInfer request's parameters, checked."""

    pooling: str | None = None
    layers: str | int | None = None
    aggregation: str = "last"
    normalize: bool = False
    truncate: bool = False
    datatype: str = "FP32"
    binary_data_output: bool = True


def read_options(parameters: Any) -> Options:
    """Options from ModelInferRequest.parameters; INVALID_ARGUMENT naming what is allowed."""
    values: dict[str, Any] = {}
    for name, parameter in parameters.items():
        if name in triton.IGNORED_PARAMETERS:
            continue
        if name not in PARAMETERS:
            raise InvalidArgument(
                f"parameters[{name!r}]: not a parameter of this server; allowed {list(PARAMETERS)}"
            )
        kinds, meaning = PARAMETERS[name]
        kind = parameter.WhichOneof("parameter_choice")
        if kind not in kinds:
            raise InvalidArgument(
                f"parameters[{name!r}]: a {kind or 'empty'} value; allowed "
                f"{' or '.join(kinds)}: {meaning}"
            )
        value = getattr(parameter, kind)
        allowed = {
            "pooling": protocol.POOLING_PB,
            "aggregation": AGGREGATION_PB,
            "datatype": FLOAT_TYPES,
        }.get(name)
        if allowed is not None and value not in allowed:
            raise InvalidArgument(f"parameters[{name!r}]={value!r}: allowed {meaning}")
        values[name] = value
    options = Options(**values)
    if not options.binary_data_output and options.datatype != "FP32":
        raise InvalidArgument(
            f"parameters['binary_data_output']=false with datatype {options.datatype}: the "
            "protocol has no field for 16-bit floats; allowed: binary_data_output=true, or FP32"
        )
    return options


def _layer_list(value: str | int | None, top: int) -> list[int]:
    """Absolute layer indices of the ``layers`` parameter (default: all of them)."""
    if value is None or (isinstance(value, str) and value.strip() == "all"):
        return list(range(top + 1))
    try:
        layers = [value] if isinstance(value, int) else [int(x) for x in value.split(",")]
    except ValueError:
        raise InvalidArgument(
            f"parameters['layers']={value!r}: allowed 'all', a layer or a list such as '-1,-2'"
        ) from None
    for layer in layers:
        if not -(top + 1) <= layer <= top:
            raise InvalidArgument(
                f"parameters['layers']: layer {layer}: no such layer; allowed {-(top + 1)}..{top} "
                f"(0 is the embedding output, {top} or -1 the last layer)"
            )
    return [layer % (top + 1) for layer in layers]


# -- tensors in ------------------------------------------------------------------------------


def _unpack_bytes(name: str, data: bytes, count: int) -> list[bytes]:
    """BYTES raw content: each element a 4-byte little-endian length, then its bytes."""
    items, offset = [], 0
    while offset < len(data):
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


def _pack_bytes(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def read_inputs(request: v2.ModelInferRequest, model: triton.V2Model) -> dict[str, Any]:
    """Each input by name: a list of str (TEXT, TEXT_PAIR) or an int64 array [batch, seq]."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidArgument(
            f"raw_input_contents: {len(raw)} entries for {len(request.inputs)} inputs; allowed: "
            "one per input, in the order of inputs"
        )
    found: dict[str, Any] = {}
    for index, tensor in enumerate(request.inputs):
        name = tensor.name
        model.check_input(index, name)
        if name in found:
            raise InvalidArgument(f"inputs[{index}]: {name} given twice; allowed once")
        datatype = "BYTES" if name in TEXT_INPUTS else "INT64"
        if tensor.datatype != datatype:
            raise InvalidArgument(f"{name}: datatype {tensor.datatype!r}; allowed {datatype}")
        shape = list(tensor.shape)
        ok = (
            (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1))
            if datatype == "BYTES"
            else len(shape) == 2
        )
        if not ok or any(d < 1 for d in shape):
            allowed = "[batch] or [batch, 1]" if datatype == "BYTES" else "[batch, seq]"
            raise InvalidArgument(f"{name}: shape {shape}; allowed {allowed}, each at least 1")
        count = int(np.prod(shape))
        if raw and tensor.HasField("contents"):
            raise InvalidArgument(
                f"{name}: both contents and raw_input_contents given; allowed one of them"
            )
        if datatype == "BYTES":
            items = (
                _unpack_bytes(name, raw[index], count)
                if raw
                else list(tensor.contents.bytes_contents)
            )
            if len(items) != count:
                raise InvalidArgument(
                    f"{name}: {len(items)} elements in contents.bytes_contents, the shape "
                    f"{shape} says {count}"
                )
            texts = []
            for i, item in enumerate(items):
                try:
                    texts.append(item.decode("utf-8"))
                except UnicodeDecodeError as error:
                    raise InvalidArgument(
                        f"{name}[{i}]: not UTF-8 ({error}); allowed: UTF-8 text"
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
            values = np.asarray(tensor.contents.int64_contents, dtype=np.int64)
            if values.size != count:
                raise InvalidArgument(
                    f"{name}: {values.size} elements in contents.int64_contents, the shape "
                    f"{shape} says {count}"
                )
        found[name] = values.reshape(shape)
    return found


def _sequences(inputs: dict[str, Any], variant: LoadedVariant) -> list[pb.TokenSequence]:
    """Token inputs as bertserve.v1 sequences, the client's trailing padding dropped."""
    ids = inputs["input_ids"]
    for name in TOKEN_INPUTS[1:]:
        if name in inputs and inputs[name].shape != ids.shape:
            raise InvalidArgument(
                f"{name}: shape {list(inputs[name].shape)}; allowed the shape of input_ids "
                f"{list(ids.shape)}"
            )
    mask = inputs.get("attention_mask", np.ones_like(ids))
    types = inputs.get("token_type_ids", np.zeros_like(ids))
    for name, values, top in (
        ("input_ids", ids, variant.vocab_size - 1),
        ("attention_mask", mask, 1),
        ("token_type_ids", types, variant.type_vocab_size - 1),
    ):
        bad = np.argwhere((values < 0) | (values > top))
        if bad.size:
            row, column = bad[0]
            value = values[row, column]
            raise InvalidArgument(f"{name}[{row}][{column}]={value}: allowed 0..{top}")
    sequences = []
    for row in range(ids.shape[0]):
        real = np.flatnonzero(mask[row])
        if not real.size:
            raise InvalidArgument(
                f"attention_mask[{row}]: all 0, no token to compute; allowed 1 for the real "
                "tokens, 0 for padding after them"
            )
        end = int(real[-1]) + 1
        sequences.append(
            pb.TokenSequence(
                input_ids=ids[row, :end].tolist(),
                attention_mask=mask[row, :end].tolist(),
                token_type_ids=types[row, :end].tolist(),
            )
        )
    return sequences


# -- tensors out -----------------------------------------------------------------------------


def padded(packed: np.ndarray, lengths: list[int]) -> np.ndarray:
    """Packed token rows (total_tokens, width) -> (batch, longest, width), zeros after each
    sequence's length."""
    lengths_array = np.asarray(lengths)
    out = np.zeros((len(lengths), int(lengths_array.max()), packed.shape[1]), dtype=packed.dtype)
    out[np.arange(out.shape[1]) < lengths_array[:, None]] = packed
    return out


def _add_output(
    response: v2.ModelInferResponse, name: str, array: np.ndarray, datatype: str, raw: bool
) -> None:
    """Append one output tensor, as raw_output_contents or as typed contents."""
    tensor = response.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
    if datatype == "BYTES":
        items = [str(item).encode() for item in array.ravel()]
        if raw:
            response.raw_output_contents.append(_pack_bytes(items))
        else:
            tensor.contents.bytes_contents.extend(items)
    elif datatype == "INT64":
        if raw:
            response.raw_output_contents.append(array.astype("<i8").tobytes())
        else:
            tensor.contents.int64_contents.extend(array.ravel().tolist())
    elif raw:
        response.raw_output_contents.append(convert(array, FLOAT_TYPES[datatype]).tobytes())
    else:  # FP32 (read_options refuses 16-bit floats without raw contents)
        tensor.contents.fp32_contents.extend(array.ravel().tolist())


class InferenceServicer(grpc_service_pb2_grpc.GRPCInferenceServiceServicer):
    """The v2 front door of a BertServicer: its registry, batchers, drain state and streams."""

    def __init__(self, bert: BertServicer) -> None:
        self.bert = bert
        self.registry = bert.registry
        self.config = bert.config
        # one message out must fit the server's send limit (the caller's may be higher)
        limit = min(self.config.max_answer_bytes, self.config.max_request_bytes)
        self.answer_limit = (
            limit,
            f"this server's limit of {limit / 2**20:.1f} MiB per message (max_answer_bytes, "
            "max_request_bytes)",
            "ask for fewer outputs or send fewer texts per request",
        )
        self._admit = admit_up_to(limit - MESSAGE_MARGIN, *self.answer_limit[1:])

    @property
    def draining(self) -> bool:
        return self.bert.draining

    @property
    def ready(self) -> bool:
        return self.bert.ready and not self.bert.draining

    # -- models and versions ---------------------------------------------------------------

    def _model(self, name: str) -> triton.V2Model:
        models = self.registry.models
        if not name:
            raise InvalidArgument(f"model name: empty; allowed one of {triton.names(models)}")
        model = triton.resolve(models, name)
        if model is None:
            base = name.removesuffix(triton.FEATURES)
            refused = [why for (m, _), why in self.registry.failed.items() if m == base]
            if refused:
                raise FailedPrecondition(refused[0])
            raise ModelNotFound(f"model {name!r} not found; this server has {triton.names(models)}")
        return model

    def _version(self, model: triton.V2Model, version: str) -> str:
        """The variant a version names ("" = the model's default; a name or its Triton number);
        NOT_FOUND if not served."""
        if not version:
            return self.registry.default_variants[model.model]
        version = triton.variant_of(model.package, version)
        versions = self.registry.servable_variants(model.package)
        if version not in versions:
            raise ModelNotFound(
                f"version {version!r} of model {model.name!r} not found; its versions (the "
                f"variants this server serves) are {versions}"
            )
        return version

    def _output_names(self, model: triton.V2Model) -> dict[str, tuple[str, list[int]]]:
        """Every output of ``model``: name -> (datatype, shape)."""
        return {name: (t.datatype, list(t.shape)) for name, t in model.outputs.items()}

    # -- inference -------------------------------------------------------------------------

    def _embed_request(
        self,
        request: v2.ModelInferRequest,
        model: triton.V2Model,
        variant: LoadedVariant,
        options: Options,
        names: list[str],
    ) -> tuple[pb.EmbedRequest, FeatureSpec]:
        """The bertserve.v1 request and features that answer a v2 request's outputs."""
        inputs = read_inputs(request, model)
        top = variant.num_layers
        embed = pb.EmbedRequest(
            id=request.id,
            model=variant.model.name,
            variant=variant.package.name,
            token_embeddings="token_embeddings" in names,
            aggregate=AGGREGATION_PB[options.aggregation],
            normalize=options.normalize,
            truncate=options.truncate,
            dtype=protocol.DTYPE_PB[FLOAT_TYPES[options.datatype]],
        )
        if "sentence_embedding" in names:
            pooling = options.pooling or variant.model.manifest.get("default_pooling", "cls")
            embed.pooling = protocol.POOLING_PB[pooling]
        else:
            embed.pooling = pb.POOLING_NONE
            if options.normalize:
                raise InvalidArgument(
                    "parameters['normalize']=true: normalizes sentence_embedding; ask for that "
                    "output"
                )
        stacked = _layer_list(options.layers, top)  # checked even when not used
        layers = stacked if "hidden_states" in names else []
        layers += [int(name.split(".")[1]) % (top + 1) for name in names if "." in name]
        embed.layers.extend(dict.fromkeys(layers))
        if "TEXT" in inputs:
            if "input_ids" in inputs:
                raise InvalidArgument("TEXT and input_ids both given; allowed one of them")
            embed.texts.extend(inputs["TEXT"])
            pairs = inputs.get("TEXT_PAIR")
            if pairs is not None and len(pairs) != len(embed.texts):
                raise InvalidArgument(
                    f"TEXT_PAIR: {len(pairs)} texts for {len(embed.texts)} in TEXT; allowed one "
                    "per text of TEXT"
                )
            embed.text_pairs.extend(pairs or [])
        elif "input_ids" in inputs:
            if "TEXT_PAIR" in inputs:
                raise InvalidArgument("TEXT_PAIR without TEXT; allowed only beside TEXT")
            embed.sequences.extend(_sequences(inputs, variant))
        elif not model.features:
            raise InvalidArgument(
                f"no TEXT among the inputs {list(inputs)}; model {model.name!r} takes TEXT "
                "(BYTES [batch] or [batch, 1])"
            )
        else:
            raise InvalidArgument(
                f"no TEXT and no input_ids among the inputs {list(inputs)}; allowed TEXT (BYTES, "
                "optional TEXT_PAIR) or input_ids (INT64, optional attention_mask, token_type_ids)"
            )
        protocol.check_inputs(embed)
        check_sequence_count(
            len(embed.texts) + len(embed.sequences), self.config.max_request_sequences
        )
        logits = any(name in CLASSIFIER_OUTPUTS for name in names)
        if logits:
            check_classifier(variant)
        if embed.pooling == pb.POOLING_NONE and not (embed.token_embeddings or embed.layers):
            return embed, FeatureSpec(num_layers=top, logits=True)
        return embed, dataclasses.replace(protocol.feature_spec(embed, variant), logits=logits)

    def _requested(self, request: v2.ModelInferRequest, model: triton.V2Model) -> dict[str, str]:
        """The outputs asked for, checked: the name asked -> the output it is (hidden_states.-1
        is the last layer's). None asked: the sentence embedding, or a classifier's label and
        probabilities."""
        available = self._output_names(model)
        top = int(model.package.manifest["num_layers"])
        names: dict[str, str] = {}
        for index, output in enumerate(request.outputs):
            asked = name = output.name
            if output.parameters:
                raise InvalidArgument(
                    f"outputs[{index}] ({name}): parameters {sorted(output.parameters)} are not "
                    "supported per output; allowed: none (set request parameters instead)"
                )
            layer = name.removeprefix("hidden_states.")
            if layer != name and layer.startswith("-") and layer[1:].isdigit():
                if int(layer) >= -(top + 1):
                    name = f"hidden_states.{int(layer) % (top + 1)}"
            if name not in available:
                raise model.no_such_output(index, asked)
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

    async def infer(
        self, request: v2.ModelInferRequest, timeout: float | None, admit: Admit
    ) -> v2.ModelInferResponse:
        """Answer one ModelInferRequest through the bertserve.v1 machinery."""
        started = time.monotonic_ns()
        model = self._model(request.model_name)
        version = self._version(model, request.model_version)
        try:
            variant = await self.registry.variant(model.model, version)
            options = read_options(request.parameters)
            names = self._requested(request, model)
            embed, spec = self._embed_request(
                request, model, variant, options, list(names.values())
            )
            computing = time.monotonic_ns()
            result, tokenizing_ns = await self.bert.compute(embed, variant, spec, timeout, admit)
            answering = time.monotonic_ns()
            response = self._response(request, variant, names, result, options)
            check_answer_size(response.ByteSize(), *self.answer_limit, estimated=False)
        except Exception:
            STATISTICS.failed(model.name, version, time.monotonic_ns() - started)
            raise
        done = time.monotonic_ns()
        STATISTICS.succeeded(
            model.name,
            version,
            sequences=len(result.lengths),
            total_ns=done - started,
            queue_ns=result.queue_ns,
            input_ns=computing - started + tokenizing_ns,
            infer_ns=result.inference_ns,
            output_ns=done - answering,
        )
        return response

    def _response(
        self,
        request: v2.ModelInferRequest,
        variant: LoadedVariant,
        names: dict[str, str],
        result: EmbedResult,
        options: Options,
    ) -> v2.ModelInferResponse:
        response = v2.ModelInferResponse(
            model_name=request.model_name, model_version=variant.package.name, id=request.id
        )
        outputs, lengths = result.outputs, result.lengths
        top = variant.num_layers
        for asked, name in names.items():
            datatype = options.datatype
            if name == "sentence_embedding":
                array = outputs[name]
            elif name == "token_embeddings" or name.startswith("hidden_states."):
                array = padded(outputs[name], lengths)
            elif name == "hidden_states":
                layers = _layer_list(options.layers, top)
                array = np.stack(
                    [padded(outputs[f"hidden_states.{i}"], lengths) for i in layers], axis=1
                )
            elif name == "lengths":
                array, datatype = np.asarray(lengths, dtype=np.int64), "INT64"
            else:
                logits = outputs["logits"]
                datatype = "FP32"
                if name == "logits":
                    array = logits
                elif name == "probabilities":
                    array = softmax(logits).astype(np.float32)
                else:
                    labels = self.registry.labels(variant.model.name)
                    array = np.asarray([labels[i] for i in logits.argmax(axis=1)], dtype=object)
                    datatype = "BYTES"
            _add_output(response, asked, array, datatype, options.binary_data_output)
        return response

    # -- the RPCs --------------------------------------------------------------------------

    # The two probes are not @unary: a draining server is still live, and not ready, rather
    # than UNAVAILABLE (as grpc.health.v1 answers NOT_SERVING).
    async def ServerLive(
        self, request: v2.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> v2.ServerLiveResponse:
        return v2.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: v2.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> v2.ServerReadyResponse:
        return v2.ServerReadyResponse(ready=self.ready)

    @unary("ModelReady")
    async def ModelReady(
        self, request: v2.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> v2.ModelReadyResponse:
        try:
            model = self._model(request.name)
        except FailedPrecondition:  # a model whose every package was refused at load
            return v2.ModelReadyResponse(ready=False)
        key = (model.model, self._version(model, request.version))
        loadable = key not in self.registry.failed and (
            len(self.registry.loaded) < self.config.max_loaded_variants
        )
        return v2.ModelReadyResponse(ready=self.ready and (key in self.registry.loaded or loadable))

    @unary("ServerMetadata")
    async def ServerMetadata(
        self, request: v2.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> v2.ServerMetadataResponse:
        return v2.ServerMetadataResponse(
            name="bertserve", version=_version(), extensions=list(EXTENSIONS)
        )

    @unary("ModelMetadata")
    async def ModelMetadata(
        self, request: v2.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> v2.ModelMetadataResponse:
        model = self._model(request.name)
        self._version(model, request.version)
        return triton.metadata(model, self.registry.servable_variants(model.package))

    @unary("ModelInfer")
    async def ModelInfer(
        self, request: v2.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> v2.ModelInferResponse:
        return await self.infer(request, context.time_remaining(), self._admit)

    async def ModelStreamInfer(
        self,
        request_iterator: AsyncIterator[v2.ModelInferRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[v2.ModelStreamInferResponse]:
        """Triton's streaming extension: each request answered as it completes; a failed one
        answers ``error_message`` ("CODE: message") in-band and the stream goes on."""

        async def work(
            request: v2.ModelInferRequest, admit: Admit
        ) -> list[v2.ModelStreamInferResponse]:
            response = await self.infer(request, context.time_remaining(), admit)
            return [v2.ModelStreamInferResponse(infer_response=response)]

        def failed(
            request: v2.ModelInferRequest, error: Exception
        ) -> list[v2.ModelStreamInferResponse]:
            code, message = status_of(error)
            echo = v2.ModelInferResponse(
                model_name=request.model_name, model_version=request.model_version, id=request.id
            )
            return [
                v2.ModelStreamInferResponse(
                    error_message=f"{code.name}: {message}", infer_response=echo
                )
            ]

        stream = self.bert.stream("ModelStreamInfer", request_iterator, context, work, failed)
        async for response in stream:
            yield response

    # -- Triton's model APIs (server/triton.py builds the answers) ---------------------------

    @unary("ModelConfig")
    async def ModelConfig(
        self, request: v2.ModelConfigRequest, context: grpc.aio.ServicerContext
    ) -> v2.ModelConfigResponse:
        model = self._model(request.name)
        version = self._version(model, request.version)
        settings = self.config.batch_settings(model.model)
        return v2.ModelConfigResponse(
            config=triton.model_config(model, version, settings, self.config)
        )

    @unary("ModelStatistics")
    async def ModelStatistics(
        self, request: v2.ModelStatisticsRequest, context: grpc.aio.ServicerContext
    ) -> v2.ModelStatisticsResponse:
        """Every model and version, or the one asked for (``version`` needs ``name``)."""
        if request.version and not request.name:
            raise InvalidArgument("version without name; allowed: a name, or neither")
        if request.name:
            model = self._model(request.name)
            versions = (
                [self._version(model, request.version)]
                if request.version
                else self.registry.servable_variants(model.package)
            )
            wanted = [(model, versions)]
        else:
            wanted = []
            for name in triton.names(self.registry.models):
                model = self._model(name)
                wanted.append((model, self.registry.servable_variants(model.package)))
        stats = []
        for model, variants in wanted:
            numbers = triton.version_numbers(list(model.package.variants))
            for variant in variants:
                label = f"{model.model}/{variant}"
                stats.append(
                    triton.model_statistics(
                        model.name, variant, numbers[variant], label, STATISTICS
                    )
                )
        return v2.ModelStatisticsResponse(model_stats=stats)

    @unary("RepositoryIndex")
    async def RepositoryIndex(
        self, request: v2.RepositoryIndexRequest, context: grpc.aio.ServicerContext
    ) -> v2.RepositoryIndexResponse:
        """Every v2 model and version with its state; ``ready`` keeps the READY ones."""
        registry = self.registry
        return triton.repository_index(
            registry.models,
            {name: registry.servable_variants(model) for name, model in registry.models.items()},
            registry.failed,
            set(registry.loaded),
            self.config.max_loaded_variants,
            ready_only=request.ready,
        )


def _version() -> str:
    try:
        return importlib.metadata.version("bertserve")
    except importlib.metadata.PackageNotFoundError:
        return "0"

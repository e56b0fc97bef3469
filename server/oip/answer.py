"""Open Inference Protocol answers: a core Result -> ModelInferResponse, token-level outputs
padded to the longest sequence (as the codec's ``output_metadata`` lists them)."""

from __future__ import annotations

import struct

import numpy as np
from bertserve.inference import grpc_service_pb2 as v2
from bertserve.server.core.request import Result
from bertserve.server.features import convert, softmax
from bertserve.server.oip.codec import FLOAT_TYPES, Parameters


def _pack_bytes(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


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
    elif datatype == "INT32":
        if raw:
            response.raw_output_contents.append(array.astype("<i4").tobytes())
        else:
            tensor.contents.int_contents.extend(array.ravel().tolist())
    elif datatype == "INT64":
        if raw:
            response.raw_output_contents.append(array.astype("<i8").tobytes())
        else:
            tensor.contents.int64_contents.extend(array.ravel().tolist())
    elif raw:
        response.raw_output_contents.append(convert(array, FLOAT_TYPES[datatype]).tobytes())
    else:  # FP32 (read_parameters refuses 16-bit floats without raw contents)
        tensor.contents.fp32_contents.extend(array.ravel().tolist())


def response(
    request_id: str,
    model: str,
    version: str,
    num_layers: int,
    labels: list[str] | None,
    names: dict[str, str],
    result: Result,
    parameters: Parameters,
) -> v2.ModelInferResponse:
    """The ModelInferResponse of a core result: token-level outputs padded to the longest."""
    answer = v2.ModelInferResponse(model_name=model, model_version=version, id=request_id)
    outputs, lengths = result.outputs, result.lengths
    top = num_layers
    for asked, name in names.items():
        datatype = parameters.datatype
        if name in ("sentence_embedding", "chunk_embeddings", "span_embeddings"):
            array = outputs[name]
        elif name in ("chunk_spans", "span_offsets"):  # int32 whatever the datatype asks
            array, datatype = outputs[name], "INT32"
        elif name == "token_embeddings" or name.startswith("hidden_states."):
            array = padded(outputs[name], lengths)
        elif name == "hidden_states":
            layers = range(top + 1) if parameters.layers is None else parameters.layers
            array = np.stack(
                [padded(outputs[f"hidden_states.{i % (top + 1)}"], lengths) for i in layers],
                axis=1,
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
                assert labels
                array = np.asarray([labels[i] for i in logits.argmax(axis=1)], dtype=object)
                datatype = "BYTES"
        _add_output(answer, asked, array, datatype, parameters.binary_data_output)
    return answer

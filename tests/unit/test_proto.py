"""The generated stubs are reproducible: regenerating them from proto/ changes nothing; the
Open Inference Protocol's names and numbers are the published ones."""

import subprocess
import sys
from pathlib import Path

import pytest
from bertserve.inference import grpc_service_pb2 as v2
from bertserve.v1 import bertserve_pb2

ROOT = Path(__file__).resolve().parents[2]
PROTOS = {
    "bertserve/v1/bertserve.proto": (
        "bertserve_pb2.py",
        "bertserve_pb2.pyi",
        "bertserve_pb2_grpc.py",
    ),
    "bertserve/inference/grpc_service.proto": (
        "grpc_service_pb2.py",
        "grpc_service_pb2.pyi",
        "grpc_service_pb2_grpc.py",
    ),
}


@pytest.mark.parametrize("proto", PROTOS)
def test_stubs_match_the_proto(tmp_path: Path, proto: str) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-Iproto",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            f"proto/{proto}",
        ],
        cwd=ROOT,
        check=True,
    )
    folder = Path(proto).parent
    for name in PROTOS[proto]:
        fresh = (tmp_path / folder / name).read_text()
        checked_in = (ROOT / "proto" / folder / name).read_text()
        assert fresh == checked_in, f"{folder / name} drifted from the .proto: run ./dev proto"


def test_the_descriptor_is_the_versioned_package() -> None:
    service = bertserve_pb2.DESCRIPTOR.services_by_name["BertService"]
    assert service.full_name == "bertserve.v1.BertService"
    assert {m.name for m in service.methods} >= {
        "Embed",
        "EmbedStream",
        "Tokenize",
        "Classify",
        "ModelInfo",
        "ListModels",
    }
    # tensors are bytes, never repeated floats
    tensor = bertserve_pb2.Tensor.DESCRIPTOR
    assert tensor.fields_by_name["data"].type == tensor.fields_by_name["data"].TYPE_BYTES


def _fields(message) -> dict[str, tuple[int, int, bool]]:
    """name -> (number, type, repeated) of a message descriptor's fields."""
    return {f.name: (f.number, f.type, f.is_repeated) for f in message.fields}


def test_the_open_inference_protocol_is_the_published_wire_contract() -> None:
    """Spot checks against Triton's grpc_service.proto (triton-inference-server/common): the
    names and numbers a generated v2 client sends."""
    F = v2.ModelInferRequest.DESCRIPTOR.fields[0]
    string, int64, bytes_, message, bool_ = (
        F.TYPE_STRING,
        F.TYPE_INT64,
        F.TYPE_BYTES,
        F.TYPE_MESSAGE,
        F.TYPE_BOOL,
    )
    one, many = False, True
    assert v2.DESCRIPTOR.package == "inference"
    service = v2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"
    methods = {m.name: m for m in service.methods}
    assert list(methods) == [
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
        "ModelStreamInfer",
    ]
    stream = methods["ModelStreamInfer"]
    assert stream.client_streaming and stream.server_streaming
    assert stream.output_type.full_name == "inference.ModelStreamInferResponse"
    assert _fields(v2.ModelInferRequest.DESCRIPTOR) == {
        "model_name": (1, string, one),
        "model_version": (2, string, one),
        "id": (3, string, one),
        "parameters": (4, message, many),
        "inputs": (5, message, many),
        "outputs": (6, message, many),
        "raw_input_contents": (7, bytes_, many),
    }
    assert _fields(v2.ModelInferRequest.InferInputTensor.DESCRIPTOR) == {
        "name": (1, string, one),
        "datatype": (2, string, one),
        "shape": (3, int64, many),
        "parameters": (4, message, many),
        "contents": (5, message, one),
    }
    assert _fields(v2.ModelInferResponse.DESCRIPTOR) == {
        "model_name": (1, string, one),
        "model_version": (2, string, one),
        "id": (3, string, one),
        "parameters": (4, message, many),
        "outputs": (5, message, many),
        "raw_output_contents": (6, bytes_, many),
    }
    assert _fields(v2.ModelStreamInferResponse.DESCRIPTOR) == {
        "error_message": (1, string, one),
        "infer_response": (2, message, one),
    }
    contents = _fields(v2.InferTensorContents.DESCRIPTOR)
    assert [(name, number) for name, (number, *_) in contents.items()] == [
        ("bool_contents", 1),
        ("int_contents", 2),
        ("int64_contents", 3),
        ("uint_contents", 4),
        ("uint64_contents", 5),
        ("fp32_contents", 6),
        ("fp64_contents", 7),
        ("bytes_contents", 8),
    ]
    parameter = v2.InferParameter.DESCRIPTOR
    assert [(f.name, f.number) for f in parameter.oneofs_by_name["parameter_choice"].fields] == [
        ("bool_param", 1),
        ("int64_param", 2),
        ("string_param", 3),
        ("double_param", 4),
        ("uint64_param", 5),
    ]
    assert _fields(v2.ModelReadyResponse.DESCRIPTOR) == {"ready": (1, bool_, one)}

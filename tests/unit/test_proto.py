"""The generated stubs are reproducible: regenerating them from proto/ changes nothing; the
Open Inference Protocol's names and numbers are the published ones."""

import subprocess
import sys
from pathlib import Path

import pytest
from bertserve.inference import grpc_service_pb2 as v2
from bertserve.inference import model_config_pb2 as mc
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
    "bertserve/inference/model_config.proto": (
        "model_config_pb2.py",
        "model_config_pb2.pyi",
        "model_config_pb2_grpc.py",
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
        "ModelConfig",
        "ModelStatistics",
        "RepositoryIndex",
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


def test_the_model_apis_are_the_published_wire_contract() -> None:
    """ModelConfig, ModelStatistics and RepositoryIndex as Triton's grpc_service.proto and
    model_config.proto number them (a subset: no field kept was renumbered)."""
    F = v2.ModelInferRequest.DESCRIPTOR.fields[0]
    string, uint64, int32, int64, message, bool_, enum = (
        F.TYPE_STRING,
        F.TYPE_UINT64,
        F.TYPE_INT32,
        F.TYPE_INT64,
        F.TYPE_MESSAGE,
        F.TYPE_BOOL,
        F.TYPE_ENUM,
    )
    one, many = False, True
    assert _fields(v2.ModelConfigResponse.DESCRIPTOR) == {"config": (1, message, one)}
    config = _fields(mc.ModelConfig.DESCRIPTOR)
    assert {name: config[name][0] for name in config} == {
        "name": 1,
        "platform": 2,
        "backend": 17,
        "runtime": 25,
        "max_batch_size": 4,
        "input": 5,
        "output": 6,
        "dynamic_batching": 11,
        "instance_group": 7,
        "default_model_filename": 8,
        "parameters": 14,
        "model_transaction_policy": 19,
        "response_cache": 24,
    }
    assert mc.ModelConfig.DESCRIPTOR.oneofs_by_name["scheduling_choice"].fields[0].number == 11
    assert _fields(mc.ModelInput.DESCRIPTOR) == {
        "name": (1, string, one),
        "data_type": (2, enum, one),
        "format": (3, enum, one),
        "dims": (4, int64, many),
        "reshape": (5, message, one),
        "is_shape_tensor": (6, bool_, one),
        "allow_ragged_batch": (7, bool_, one),
        "optional": (8, bool_, one),
        "is_non_linear_format_io": (9, bool_, one),
    }
    assert {n: v[0] for n, v in _fields(mc.ModelOutput.DESCRIPTOR).items()} == {
        "name": 1,
        "data_type": 2,
        "dims": 3,
        "reshape": 5,
        "label_filename": 4,
        "is_shape_tensor": 6,
        "is_non_linear_format_io": 7,
    }
    assert _fields(mc.ModelDynamicBatching.DESCRIPTOR) == {
        "preferred_batch_size": (1, int32, many),
        "max_queue_delay_microseconds": (2, uint64, one),
        "preserve_ordering": (3, bool_, one),
        "priority_levels": (4, uint64, one),
        "default_priority_level": (5, uint64, one),
    }
    assert mc.DataType.Value("TYPE_STRING") == 13 and mc.DataType.Value("TYPE_FP32") == 11
    assert mc.DataType.Value("TYPE_INT64") == 9 and mc.DataType.Value("TYPE_BF16") == 14
    assert _fields(v2.StatisticDuration.DESCRIPTOR) == {
        "count": (1, uint64, one),
        "ns": (2, uint64, one),
    }
    assert [(f.name, f.number) for f in v2.InferStatistics.DESCRIPTOR.fields] == [
        ("success", 1),
        ("fail", 2),
        ("queue", 3),
        ("compute_input", 4),
        ("compute_infer", 5),
        ("compute_output", 6),
        ("cache_hit", 7),
        ("cache_miss", 8),
    ]
    assert {n: v[0] for n, v in _fields(v2.ModelStatistics.DESCRIPTOR).items()} == {
        "name": 1,
        "version": 2,
        "last_inference": 3,
        "inference_count": 4,
        "execution_count": 5,
        "inference_stats": 6,
        "batch_stats": 7,
        "memory_usage": 8,
        "response_stats": 9,
    }
    assert {n: v[0] for n, v in _fields(v2.InferBatchStatistics.DESCRIPTOR).items()} == {
        "batch_size": 1,
        "compute_input": 2,
        "compute_infer": 3,
        "compute_output": 4,
    }
    assert _fields(v2.RepositoryIndexRequest.DESCRIPTOR) == {
        "repository_name": (1, string, one),
        "ready": (2, bool_, one),
    }
    assert _fields(v2.RepositoryIndexResponse.ModelIndex.DESCRIPTOR) == {
        "name": (1, string, one),
        "version": (2, string, one),
        "state": (3, string, one),
        "reason": (4, string, one),
    }

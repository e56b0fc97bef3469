"""The generated stubs are reproducible: regenerating them from proto/ changes nothing."""

import subprocess
import sys
from pathlib import Path

from bertserve.v1 import bertserve_pb2

ROOT = Path(__file__).resolve().parents[2]
STUBS = ("bertserve_pb2.py", "bertserve_pb2.pyi", "bertserve_pb2_grpc.py")


def test_stubs_match_the_proto(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-Iproto",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            "proto/bertserve/v1/bertserve.proto",
        ],
        cwd=ROOT,
        check=True,
    )
    for name in STUBS:
        fresh = (tmp_path / "bertserve" / "v1" / name).read_text()
        checked_in = (ROOT / "proto" / "bertserve" / "v1" / name).read_text()
        assert fresh == checked_in, f"{name} drifted from the .proto: run ./dev proto"


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

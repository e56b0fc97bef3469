"""The distribution's shape: one top-level package, the right extras, boundaries kept."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = (
    "torch",
    "transformers",
    "optimum",
    "onnx",
    "onnxruntime",
    "tokenizers",
    "sklearn",
    "matplotlib",
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
    )
    (path,) = out.glob("bertserve-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_has_only_the_bertserve_package(wheel: zipfile.ZipFile) -> None:
    tops = {name.split("/")[0] for name in wheel.namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"bertserve"}
    names = set(wheel.namelist())
    for module in (
        "variants.py",
        "export/__init__.py",
        "export/package.py",
        "server/__init__.py",
        "client/__init__.py",
        "train/__init__.py",
        "v1/bertserve_pb2.py",
        "v1/bertserve_pb2_grpc.py",
        "v1/bertserve.proto",
        "inference/grpc_service_pb2.py",
        "inference/grpc_service_pb2_grpc.py",
        "inference/grpc_service.proto",
        "inference/model_config_pb2.py",
        "inference/model_config.proto",
        "server/triton.py",
        "server/statistics.py",
        "server/oip/codec.py",
        "server/core/engine.py",
        "server/v1/codec.py",
    ):
        assert f"bertserve/{module}" in names


def test_wheel_metadata_declares_the_extras(wheel: zipfile.ZipFile) -> None:
    (meta,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    text = wheel.read(meta).decode()
    base = [
        line
        for line in text.splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    ]
    assert sorted(line.split()[1].split(">")[0].split("=")[0].split("<")[0] for line in base) == [
        "grpcio",
        "numpy",
        "protobuf",
    ]
    for extra in ("server", "gpu", "export", "train", "dev"):
        assert f"Provides-Extra: {extra}" in text
    assert 'torch==2.13.0; extra == "export"' in text


def test_the_client_and_the_command_line_import_nothing_heavy() -> None:
    """A client-only install imports the client and lists every sub-command: no part loads
    its stack to register them (the server's own boundary: tests/server)."""
    code = (
        "import sys, bertserve.client, bertserve.client.commands; "
        "from bertserve.client.cli import build_parser; build_parser(); "
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""

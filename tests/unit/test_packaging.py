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


# What importing each part must not load: a part never pulls in another's stack.
BOUNDARIES = {
    "client-and-cli": (
        "import bertserve.client, bertserve.client.commands\n"
        "from bertserve.client.cli import build_parser\n"
        "build_parser()",
        HEAVY,
    ),
    "serve-command": ("import bertserve.server.cli", ("onnxruntime", "grpc_health", *HEAVY)),
    "server": (
        "import bertserve.server.app, bertserve.server.v1.servicer",
        ("torch", "transformers", "optimum"),
    ),
    "core": (
        "import bertserve.server.core.engine, bertserve.server.core.stream",
        ("grpc", "grpc_health", "onnxruntime"),
    ),
}


@pytest.mark.parametrize(("code", "forbidden"), BOUNDARIES.values(), ids=list(BOUNDARIES))
def test_each_part_imports_only_its_own_stack(code: str, forbidden: tuple[str, ...]) -> None:
    """A client-only install imports the client and lists every sub-command; the server never
    loads the exporter's stack; the core knows no gRPC."""
    check = (
        f"import sys\n{code}\n"
        f"print(','.join(sorted({{m.split('.')[0] for m in sys.modules}} & {set(forbidden)!r})))"
    )
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""

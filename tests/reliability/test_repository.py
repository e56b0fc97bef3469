"""The repository is a boundary: nothing a package names or loads may lie outside it, and
callers learn which model is refused and why, never the server's paths or which outside files
exist. And on-demand variant loads never exceed max_loaded_variants, however concurrent."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import grpc
import pytest
from bertserve.v1 import bertserve_pb2 as pb
from bertserve.v1 import bertserve_pb2_grpc
from servers import link_package, start_server


def add_file_entry(package: Path, name: str, target: Path) -> None:
    """List ``name`` in the package's manifest with ``target``'s true size and sha256."""
    manifest_path = package / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    data = target.read_bytes() if target.is_file() else b""
    manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    manifest_path.write_text(json.dumps(manifest))


@pytest.fixture
def hostile_repo(model_repo, tmp_path):
    """A repository whose packages reach outside it in each way, beside a good one."""
    source = model_repo / "minilm" / "fp32-opt"
    outside = tmp_path / "outside"
    secret = outside / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("not for callers\n")
    repo = tmp_path / "repo"
    for name in ("absolute", "absolute-missing", "climbing", "file-link", "good"):
        link_package(source, repo / name / "fp32-opt")
    add_file_entry(repo / "absolute" / "fp32-opt", str(secret), secret)
    add_file_entry(repo / "absolute-missing" / "fp32-opt", str(outside / "nothing.txt"), secret)
    add_file_entry(repo / "climbing" / "fp32-opt", "../../../outside/secret.txt", secret)
    # a model.onnx link to a real model outside, and a model folder link to a real model outside
    link_package(source, outside / "model" / "fp32-opt")
    (repo / "file-link" / "fp32-opt" / "model.onnx").unlink()
    (repo / "file-link" / "fp32-opt" / "model.onnx").symlink_to(
        outside / "model" / "fp32-opt" / "model.onnx"
    )
    (repo / "folder-link").symlink_to(outside / "model", target_is_directory=True)
    return repo


def test_packages_that_reach_outside_are_refused_and_the_others_serve(hostile_repo, tmp_path):
    server = start_server(hostile_repo, "--no-warmup")
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = bertserve_pb2_grpc.BertServiceStub(channel)
            good = stub.Embed(pb.EmbedRequest(model="good", texts=["I love Paris"]), timeout=60)
            assert good.lengths == [5]
            details = {}
            for name, expected in (
                ("absolute", "the manifest's files entry 6 is an absolute path"),
                ("absolute-missing", "the manifest's files entry 6 is an absolute path"),
                ("climbing", "files entry 6 climbs out of the package ('..')"),
                ("file-link", "model.onnx is a link that leads outside its package folder"),
                ("folder-link", "its folder is a link that leads outside the repository"),
            ):
                with pytest.raises(grpc.RpcError) as error:
                    stub.Embed(pb.EmbedRequest(model=name, texts=["x"]), timeout=60)
                assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION, name
                message = error.value.details()
                assert f"model {name!r}" in message and expected in message, message
                assert str(tmp_path) not in message and "secret" not in message, message
                details[name] = message
            # an outside file that exists and one that does not get the same answer
            same = details["absolute-missing"].replace("'absolute-missing'", "'absolute'")
            assert details["absolute"] == same
            listed = [m.name for m in stub.ListModels(pb.ListModelsRequest(), timeout=60).models]
            assert "good" in listed and not {"absolute", "climbing", "folder-link"} & set(listed)
        assert str(tmp_path / "outside") not in server.output()
    finally:
        server.stop()


def test_the_manifest_itself_is_not_read_through_a_link_out(model_repo, tmp_path):
    from bertserve.server.repository import scan_repository

    repo = tmp_path / "repo"
    package = link_package(model_repo / "minilm" / "fp32-opt", repo / "m" / "fp32-opt")
    outside = tmp_path / "manifest.json"
    (package / "manifest.json").rename(outside)
    (package / "manifest.json").symlink_to(outside)
    refused: dict = {}
    assert scan_repository(repo, refused) == {}
    assert "manifest.json is a link that leads outside" in refused[("m", "fp32-opt")]


async def test_concurrent_first_loads_never_exceed_max_loaded_variants(model_repo):
    from bertserve.server.app import create_server
    from bertserve.server.config import ServerConfig

    config = ServerConfig(
        repo=model_repo,
        port=0,
        max_loaded_variants=2,
        warmup=False,
        variants={"minilm": "fp32-opt"},
    )
    server, port = await create_server(config.validate())
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = bertserve_pb2_grpc.BertServiceStub(channel)
    try:
        assert set(server.registry.loaded) == {("minilm", "fp32-opt")}
        answers = await asyncio.gather(
            *(
                stub.Embed(pb.EmbedRequest(texts=["I love Paris"], variant=variant))
                for variant in ("fp32", "int8")
            ),
            return_exceptions=True,
        )
        served = [a for a in answers if isinstance(a, pb.EmbedResponse)]
        refused = [a for a in answers if isinstance(a, grpc.aio.AioRpcError)]
        assert len(served) == 1 and len(refused) == 1, answers
        assert refused[0].code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "max_loaded_variants" in refused[0].details()
        assert len(server.registry.loaded) == 2
    finally:
        await channel.close()
        await server.stop(1)

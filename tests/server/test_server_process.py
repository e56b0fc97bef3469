"""A ``bertserve serve`` subprocess: health, reflection, metrics, SIGTERM draining, CLI errors."""

from __future__ import annotations

import subprocess
import sys

import grpc
import numpy as np
import pytest
from bertserve.v1 import bertserve_pb2 as pb
from bertserve.v1 import bertserve_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from server_helpers import assemble
from servers import scrape, total


def test_health_is_serving_for_the_server_and_the_service(live_server):
    with grpc.insecure_channel(live_server.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "bertserve.v1.BertService"):
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert response.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as error:
            stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
        assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_and_describes_the_service(live_server):
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    with grpc.insecure_channel(live_server.target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = database.get_services()
        assert "bertserve.v1.BertService" in services and "grpc.health.v1.Health" in services
        pool = DescriptorPool(database)
        service = pool.FindServiceByName("bertserve.v1.BertService")
        methods = {m.name: m for m in service.methods}
        # what the server reflects is the compiled service (whose methods test_proto checks)
        compiled = pb.DESCRIPTOR.services_by_name["BertService"]
        assert set(methods) == {m.name for m in compiled.methods}
        assert methods["Embed"].input_type.full_name == "bertserve.v1.EmbedRequest"
        assert methods["EmbedStream"].server_streaming and methods["EmbedStream"].client_streaming


def test_a_real_embedding_over_grpc_and_metrics_move(live_server):
    assert live_server.metrics_url
    before = scrape(live_server.metrics_url)
    with grpc.insecure_channel(live_server.target) as channel:
        stub = bertserve_pb2_grpc.BertServiceStub(channel)
        response = stub.Embed(
            pb.EmbedRequest(texts=["I love Paris", "hello world"], normalize=True), timeout=60
        )
        with pytest.raises(grpc.RpcError):
            stub.Embed(pb.EmbedRequest(texts=["x"], layers=[99]), timeout=60)
    vectors = assemble([response])["sentence_embedding"]
    assert vectors.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    after = scrape(live_server.metrics_url)
    grew = lambda name, **labels: total(after, name, **labels) - total(before, name, **labels)  # noqa: E731
    assert grew("bertserve_requests_total", method="Embed", code="OK") == 1
    assert grew("bertserve_requests_total", method="Embed", code="INVALID_ARGUMENT") == 1
    assert grew("bertserve_batch_size_count") >= 1
    assert grew("bertserve_batch_size_sum") >= 2
    assert grew("bertserve_tokens_total", kind="real") == sum(response.lengths)
    assert grew("bertserve_inference_seconds_count") >= 1
    assert grew("bertserve_queue_seconds_count") == 1
    assert grew("bertserve_padding_ratio_count") >= 1


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bertserve.client.cli", "serve", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_serve_with_a_missing_repository_is_a_clear_error(tmp_path):
    finished = run_cli("--repo", str(tmp_path / "nope"), "--port", "0")
    assert finished.returncode == 2
    assert "not a directory" in finished.stderr
    empty = run_cli("--repo", str(tmp_path), "--port", "0")
    assert empty.returncode == 2 and "holds no model" in empty.stderr


def test_device_cuda_without_a_gpu_is_a_clear_error(model_repo):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has onnxruntime-gpu")
    finished = run_cli("--repo", str(model_repo), "--port", "0", "--device", "cuda")
    assert finished.returncode == 2
    assert "onnxruntime-gpu" in finished.stderr and "--device cpu" in finished.stderr


def test_a_busy_port_is_a_clear_error(model_repo):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        finished = run_cli("--repo", str(model_repo), "--port", str(busy.getsockname()[1]))
    assert finished.returncode == 2
    assert "cannot listen on 127.0.0.1:" in finished.stderr


def test_an_unknown_model_or_variant_in_variants_fails_at_start_listing_real_ones(
    model_repo, tmp_path
):
    typo = run_cli("--repo", str(model_repo), "--port", "0", "--variant", "minlm=int8")
    assert typo.returncode == 2
    assert "variants: model 'minlm' is not in" in typo.stderr
    assert "it holds ['minilm']" in typo.stderr
    config = tmp_path / "server.yaml"
    config.write_text("variants:\n  minilm: int9\n")
    bad = run_cli("--repo", str(model_repo), "--port", "0", "--config", str(config))
    assert bad.returncode == 2
    assert "variant 'int9' of model 'minilm' is not in" in bad.stderr
    assert "it has ['fp32', 'fp32-opt', 'int8']" in bad.stderr

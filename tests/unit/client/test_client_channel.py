"""Channels, status codes and the health codec, with no server."""

from __future__ import annotations

import json
import socket

import grpc
import pytest
from bertserve.client import Client
from bertserve.client import health as health_codec
from bertserve.client.channel import channel_options, resolve_target
from bertserve.client.errors import BertserveError, status_code
from grpc_health.v1 import health_pb2


def test_targets():
    assert resolve_target("127.0.0.1:50051") == "127.0.0.1:50051"
    assert resolve_target("dns:///bert.internal:50051") == "dns:///bert.internal:50051"
    assert resolve_target("127.0.0.1:1, 127.0.0.2:2") == "ipv4:127.0.0.1:1,127.0.0.2:2"
    assert resolve_target("[::1]:1,[::1]:2") == "ipv6:[::1]:1,[::1]:2"
    assert resolve_target("localhost:5,127.0.0.1:6").startswith("ipv4:127.0.0.1:5")
    with pytest.raises(ValueError, match="expected host:port"):
        resolve_target("a,b")


def test_status_codes_map_both_ways():
    assert status_code(3) is grpc.StatusCode.INVALID_ARGUMENT
    assert status_code(8) is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert status_code(1234) is grpc.StatusCode.UNKNOWN
    error = BertserveError.from_status(3, "layer 9 out of range", "req-7")
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT and error.request_id == "req-7"
    assert str(error) == "INVALID_ARGUMENT: layer 9 out of range (request 'req-7')"


def test_a_failed_call_becomes_one_exception():
    """A real call to a port nobody listens on: UNAVAILABLE, kept as the code."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again when the block ends: nothing listens
    with Client(f"127.0.0.1:{port}", timeout=5) as client:
        with pytest.raises(BertserveError) as info:
            client.health()
    assert info.value.code is grpc.StatusCode.UNAVAILABLE
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize("service", ["", "bertserve.v1.BertService"])
def test_health_codec_matches_grpc_health(service):
    assert (
        health_codec.encode_request(service)
        == health_pb2.HealthCheckRequest(service=service).SerializeToString()
    )
    for status in (0, 1, 2, 3):
        data = health_pb2.HealthCheckResponse(status=status).SerializeToString()
        assert health_codec.decode_response(data) == health_codec.STATUS_NAMES[status]


def test_channel_options_round_robin_retries_and_overrides():
    options = dict(channel_options("ipv4:127.0.0.1:1,127.0.0.1:2"))
    config = json.loads(options["grpc.service_config"])
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    (method,) = config["methodConfig"]
    assert method["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert options["grpc.enable_retries"] == 1
    assert dict(channel_options("x:1", [("grpc.enable_retries", 0)]))["grpc.enable_retries"] == 0

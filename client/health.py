"""grpc.health.v1 without grpcio-health-checking: its two tiny messages, encoded by hand."""

from __future__ import annotations

HEALTH_CHECK = "/grpc.health.v1.Health/Check"
# grpc.health.v1.HealthCheckResponse.ServingStatus
STATUS_NAMES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_request(service: str) -> bytes:
    """HealthCheckRequest{service = 1}."""
    data = service.encode()
    return b"\x0a" + _varint(len(data)) + data if data else b""


def decode_response(data: bytes) -> str:
    """HealthCheckResponse{status = 1} -> "SERVING", "NOT_SERVING", ..."""
    status, pos = 0, 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        if key == 0x08:  # field 1, varint
            status, pos = _read_varint(data, pos)
        elif key & 7 == 2:  # a length-delimited field a newer proto may add
            size, pos = _read_varint(data, pos)
            pos += size
        elif key & 7 == 0:
            _, pos = _read_varint(data, pos)
        else:
            raise ValueError(f"unexpected wire type {key & 7} in HealthCheckResponse")
    return STATUS_NAMES.get(status, f"STATUS_{status}")


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7

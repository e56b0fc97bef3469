"""Start real ``bertserve serve`` processes on loopback ports for tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# What pip and apt say when no package index or mirror can be reached: the tests that install a
# tool (tritonclient, perf_analyzer) then skip, saying so.
OFFLINE = (
    "Could not find a version that satisfies",
    "No matching distribution found",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Failed to fetch",
    "Network is unreachable",
    "no Debian mirror",
)

STARTUP_TIMEOUT_S = 300


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServerProcess:
    """A running server: ``target`` ("127.0.0.1:PORT"), ``metrics_url`` (or ""), ``log``."""

    process: subprocess.Popen
    repo: Path
    port: int
    metrics_port: int | None
    log: Path
    workdir: Path = field(repr=False)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics" if self.metrics_port else ""

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM (drains), then SIGKILL if it is still there after ``timeout``; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def wait_serving(target: str, timeout: float = 30) -> None:
    """Block until the server's overall health is SERVING."""
    end = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > end:
                raise TimeoutError(f"{target} not SERVING after {timeout}s")
            time.sleep(0.1)


def start_server(
    repo: Path, *extra_args: str, metrics: bool = True, wait: bool = True
) -> ServerProcess:
    """Start ``bertserve serve --repo REPO --port 0`` (plus ``extra_args``) and wait until it
    has written its port file (models loaded) and, with ``wait``, answers SERVING over
    plaintext; a free metrics port unless ``metrics`` is False.

    A repository's ``minilm`` answers with ``fp32-opt`` unless ``extra_args`` name a
    ``--variant``: the server would pick int8 where it measures faster, and int8's answers
    depend on what they are batched with, so tests could not compare vectors exactly."""
    workdir = Path(tempfile.mkdtemp(prefix="bertserve-server-"))
    port_file = workdir / "port"
    log = workdir / "server.log"
    metrics_port = free_port() if metrics else None
    command = [
        sys.executable,
        "-m",
        "bertserve.client.cli",
        "serve",
        *("--repo", str(repo), "--port", "0", "--port-file", str(port_file)),
        *(("--metrics-port", str(metrics_port)) if metrics_port else ()),
        *extra_args,
    ]
    if "--variant" not in extra_args and (Path(repo) / "minilm").is_dir():
        command += ["--variant", "minilm=fp32-opt"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    end = time.monotonic() + STARTUP_TIMEOUT_S
    while not (port_file.is_file() and port_file.read_text().strip()):
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{log.read_text()}")
        if time.monotonic() > end:
            process.kill()
            raise TimeoutError(
                f"the server did not start in {STARTUP_TIMEOUT_S}s:\n{log.read_text()}"
            )
        time.sleep(0.1)
    server = ServerProcess(
        process, Path(repo), int(port_file.read_text()), metrics_port, log, workdir
    )
    if wait:
        wait_serving(server.target)
    return server


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a Prometheus endpoint: (name, sorted labels) -> value."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: dict, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(
        value
        for (sample, sample_labels), value in samples.items()
        if sample == name and all(dict(sample_labels).get(k) == v for k, v in labels.items())
    )


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def link_package(source: Path, target: Path) -> Path:
    """A copy of the package folder ``source`` at ``target``: model weights hard-linked where
    the file system allows (no copy of the weights; never written to by tests), every other
    file copied (tests edit those). Not symlinks: the server refuses links that lead out of
    a package."""
    import shutil

    target.mkdir(parents=True, exist_ok=True)
    for item in Path(source).iterdir():
        if item.name.startswith("model.onnx"):
            try:
                os.link(item, target / item.name)
                continue
            except OSError:
                pass
        shutil.copy2(item, target / item.name)
    return target

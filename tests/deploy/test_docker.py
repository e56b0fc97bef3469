"""Build the Dockerfile as users do and run the image on loopback: SERVING, a real Embed that
matches the exporter's model, a non-root user, no torch in the runtime, a SIGTERM drain.

Needs a Docker engine. Where none answers, ``../shared/tools/docker-here.sh`` (beside the
clone on these machines) starts one and provides the ``python:3.11-slim`` base; elsewhere,
or when that fails, the test is skipped with the reason.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from bertserve.client import Client
from servers import free_port, wait_serving

ROOT = Path(__file__).resolve().parents[2]
HELPER = ROOT.parent / "shared" / "tools" / "docker-here.sh"
IMAGE = "bertserve:test"

# the first build installs the exporter (torch) and exports the model: longer than a test
pytestmark = [pytest.mark.docker, pytest.mark.timeout(3000)]


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=check
    )


@pytest.fixture(scope="module")
def engine() -> dict[str, str]:
    """A Docker engine, started with the machine's helper when none answers; the build
    arguments the helper asks for (its local torch wheels instead of the CPU index)."""

    def answers() -> bool:
        if shutil.which("docker") is None:
            return False
        return subprocess.run(["docker", "info"], capture_output=True).returncode == 0

    if HELPER.is_file():
        started = subprocess.run(["bash", str(HELPER)], capture_output=True, text=True, timeout=900)
        if started.returncode != 0:
            pytest.skip(f"no Docker engine could be started: {started.stderr.strip()[-300:]}")
        return {"TORCH_INDEX": "file:///opt/torch-wheels"}
    if not answers():
        pytest.skip("no Docker engine answers (docker info) and no docker-here.sh to start one")
    return {}


@pytest.fixture(scope="module")
def image(engine, figures) -> str:
    build_args = [f"--build-arg={k}={v}" for k, v in engine.items()]
    started = time.monotonic()
    built = subprocess.run(
        ["docker", "build", "--network", "host", *build_args, "-t", IMAGE, "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3000,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    size = int(docker("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout)
    base = docker("image", "inspect", "--format", "{{.Size}}", "python:3.11-slim", check=False)
    figures["docker_image"] = {
        "build_seconds": round(time.monotonic() - started),
        "image_mib": round(size / 2**20),
        "over_base_mib": round((size - int(base.stdout)) / 2**20) if base.returncode == 0 else None,
    }
    return IMAGE


def test_the_image_serves_drains_and_carries_no_torch(image, model_repo):
    port, metrics = free_port(), free_port()
    name = f"bertserve-test-{port}"
    docker(
        "run", "-d", "--network", "host", "--name", name, image,
        *("--repo", "/models", "--host", "127.0.0.1", "--port", str(port)),
        *("--metrics-port", str(metrics), "--grace-period", "20"),
    )  # fmt: skip
    try:
        target = f"127.0.0.1:{port}"
        wait_serving(target, timeout=300)
        with Client(target) as client:
            result = client.embed(["I love Paris"], output="tokens", pooling="mean")
            info = client.info()
        assert result.lengths.tolist() == [5] and info.variants[0].loaded
        assert result.variant == "fp32-opt"  # one variant per model in the image
        assert docker("exec", name, "id", "-u").stdout.strip() == "10001"
        no_torch = docker("exec", name, "python", "-c", "import torch", check=False)
        assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
        from servers import start_server

        local = start_server(model_repo, metrics=False)
        try:
            with Client(local.target, variant="fp32-opt") as client:
                expected = client.embed(["I love Paris"], output="tokens", pooling="mean")
        finally:
            local.stop()
        # the image's own export gives the features of this run's export
        np.testing.assert_allclose(
            result.sentence_embedding, expected.sentence_embedding, atol=1e-4
        )
        docker("stop", "--time", "30", name, timeout=60)  # SIGTERM, then drain
        exit_code = docker("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        assert exit_code == "0"
    finally:
        logs = docker("logs", name, check=False)
        docker("rm", "-f", name, check=False)
    assert '"message": "draining"' in logs.stderr + logs.stdout
    assert '"message": "stopped"' in logs.stderr + logs.stdout

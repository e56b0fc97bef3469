"""The Node.js client (clients/node) on a live server: its vectors equal Python's bit for bit."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from bertserve.client import Client

NODE_DIR = Path(__file__).resolve().parents[2] / "clients" / "node"


@pytest.fixture(scope="module")
def node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    if not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        npm = shutil.which("npm")
        assert npm, "node without npm: install npm to run the Node client's tests"
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True)
    return node


def test_node_client_equals_python_bit_for_bit(node, live_server, tmp_path):
    out = tmp_path / "node.json"
    env = {**os.environ, "BERTSERVE_TARGET": live_server.target, "BERTSERVE_NODE_OUT": str(out)}
    run = subprocess.run(
        [node, "--test", "test/"],
        cwd=NODE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "# skipped 0" in run.stdout and "# fail 0" in run.stdout, run.stdout
    data = json.loads(out.read_text())
    with Client(live_server.target, timeout=120) as client:
        for dtype, node_result in data["report"].items():
            result = client.embed(data["texts"], output="tokens", pooling="mean", dtype=dtype)
            assert node_result["lengths"] == result.lengths.tolist()
            for name, key in (("sentence_embedding", "sentence"), ("token_embeddings", "tokens")):
                python = np.ascontiguousarray(result.outputs[name], dtype="<f4").tobytes()
                assert base64.b64decode(node_result[key]) == python, f"{dtype} {name} differ"

"""The Node.js v2 example (clients/node/v2.js, grpc-js loading our .proto as it is) against a
live server: its vectors equal the Python client's Embed, bit for bit."""

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


def test_node_v2_example_equals_embed(classifier_server, tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    if not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        npm = shutil.which("npm")
        assert npm, "node without npm: install npm to run the Node client's tests"
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True)
    out = tmp_path / "v2.json"
    env = {
        **os.environ,
        "BERTSERVE_TARGET": classifier_server.target,
        "BERTSERVE_NODE_V2_OUT": str(out),
    }
    run = subprocess.run(
        [node, "--test", "test/v2.test.js"],
        cwd=NODE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "# skipped 0" in run.stdout and "# fail 0" in run.stdout, run.stdout
    data = json.loads(out.read_text())
    with Client(classifier_server.target, timeout=120) as client:
        expected = client.embed(
            data["texts"], model="minilm", variant="fp32-opt", pooling="mean", normalize=True
        )
    assert data["lengths"] == expected.lengths.tolist()
    vectors = np.ascontiguousarray(expected.sentence_embedding, dtype="<f4").tobytes()
    assert base64.b64decode(data["sentence"]) == vectors

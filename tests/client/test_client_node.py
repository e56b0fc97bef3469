"""The Node.js client (clients/node) on a live server: its vectors equal Python's bit for bit."""

from __future__ import annotations

import base64
import json

import numpy as np
from bertserve.client import Client


def test_node_client_equals_python_bit_for_bit(node_tests, live_server, tmp_path):
    out = tmp_path / "node.json"
    node_tests("test/", BERTSERVE_TARGET=live_server.target, BERTSERVE_NODE_OUT=str(out))
    data = json.loads(out.read_text())
    with Client(live_server.target, timeout=120) as client:
        for dtype, node_result in data["report"].items():
            result = client.embed(data["texts"], output="tokens", pooling="mean", dtype=dtype)
            assert node_result["lengths"] == result.lengths.tolist()
            for name, key in (("sentence_embedding", "sentence"), ("token_embeddings", "tokens")):
                python = np.ascontiguousarray(result.outputs[name], dtype="<f4").tobytes()
                assert base64.b64decode(node_result[key]) == python, f"{dtype} {name} differ"

"""The Node.js v2 example (clients/node/v2.js, grpc-js loading our .proto as it is) against a
live server: its vectors equal the Python client's Embed, bit for bit."""

from __future__ import annotations

import base64
import json

import numpy as np
from bertserve.client import Client


def test_node_v2_example_equals_embed(node_tests, classifier_server, tmp_path):
    out = tmp_path / "v2.json"
    node_tests(
        "test/v2.test.js",
        BERTSERVE_TARGET=classifier_server.target,
        BERTSERVE_NODE_V2_OUT=str(out),
    )
    data = json.loads(out.read_text())
    with Client(classifier_server.target, timeout=120) as client:
        expected = client.embed(
            data["texts"], model="minilm", variant="fp32-opt", pooling="mean", normalize=True
        )
    assert data["lengths"] == expected.lengths.tolist()
    vectors = np.ascontiguousarray(expected.sentence_embedding, dtype="<f4").tobytes()
    assert base64.b64decode(data["sentence"]) == vectors

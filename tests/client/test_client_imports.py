"""The client stays light: importing it loads no inference or training stack."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "onnxruntime", "transformers", "optimum", "tokenizers", "onnx")


def test_client_imports_nothing_heavy():
    code = (
        "import json, sys\n"
        "import bertserve.client, bertserve.client.commands\n"
        "from bertserve.client.cli import build_parser\n"
        "build_parser()\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(run.stdout) == []

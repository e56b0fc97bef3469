"""tritonclient in a virtual environment of its own, as a Triton user has it (it pins protobuf
below 7, bertserve needs 7), and one run of it against the classifier server."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from servers import OFFLINE

ROOT = Path(__file__).resolve().parents[2]
TRITONCLIENT = "tritonclient[grpc]==2.73.0"
VENV = ROOT / ".cache" / "tritonclient-2.73.0"


@pytest.fixture(scope="session")
def tritonclient_python() -> Path:
    """The python of a venv under .cache/ with tritonclient[grpc] installed by pip."""
    python = VENV / "bin" / "python"
    done = VENV / ".installed"
    if not done.is_file():
        shutil.rmtree(VENV, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        install = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", TRITONCLIENT, "numpy"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if install.returncode != 0:
            output = install.stdout + install.stderr
            if any(words in output for words in OFFLINE):
                pytest.skip(
                    f"pip cannot install {TRITONCLIENT} (no package index?): {output[-500:]}"
                )
            raise AssertionError(f"pip install {TRITONCLIENT} failed:\n{output}")
        done.write_text(TRITONCLIENT + "\n")
    return python


class TritonRun:
    """What tests/oip/tritonclient_run.py got: ``results`` (JSON) and ``array(name)``."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.results = json.loads((out / "results.json").read_text())

    def array(self, name: str) -> np.ndarray:
        return np.load(self.out / f"{name}.npy", allow_pickle=False)


@pytest.fixture(scope="session")
def triton_run(tritonclient_python, classifier_server, tmp_path_factory) -> TritonRun:
    """tritonclient, unchanged, against a fresh server of minilm and minilm-sentiment."""
    out = tmp_path_factory.mktemp("tritonclient")
    run = subprocess.run(
        [
            str(tritonclient_python),
            str(Path(__file__).with_name("tritonclient_run.py")),
            classifier_server.target,
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr + classifier_server.output()[-3000:]
    return TritonRun(out)

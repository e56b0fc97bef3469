"""Reliability suites: each records its figures, printed at the end of the run."""

from __future__ import annotations

import json
import platform
import subprocess
from pathlib import Path

import pytest

FIGURES: dict[str, dict] = {}
ROOT = Path(__file__).resolve().parents[2]


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

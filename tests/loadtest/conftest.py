"""Triton's own load tester, perf_analyzer, set up by shared/tools/perf-analyzer.sh (the PyPI
wheel's binary with a private glibc 2.38 sysroot) under .cache/, and a way to run it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from servers import OFFLINE

ROOT = Path(__file__).resolve().parents[2]
# shared/ sits beside the repository in CI (../shared) and may be inside a checkout
TOOLS = [ROOT.parent / "shared" / "tools", ROOT / "shared" / "tools"]


@pytest.fixture(scope="session")
def perf_analyzer() -> Path:
    """The ``pa`` wrapper: $PERF_ANALYZER if set, else made by perf-analyzer.sh under .cache
    (once)."""
    if os.environ.get("PERF_ANALYZER"):
        return Path(os.environ["PERF_ANALYZER"])
    made = ROOT / ".cache" / "perf-analyzer" / "pa"
    if os.access(made, os.X_OK):  # set up by an earlier run
        return made
    tool = next((d / "perf-analyzer.sh" for d in TOOLS if (d / "perf-analyzer.sh").is_file()), None)
    if tool is None:
        pytest.skip(f"no perf-analyzer.sh in {[str(d) for d in TOOLS]} and PERF_ANALYZER unset")
    run = subprocess.run(
        ["bash", str(tool), str(ROOT / ".cache" / "perf-analyzer")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if run.returncode != 0:
        output = run.stdout + run.stderr
        if any(words in output for words in OFFLINE):
            pytest.skip(f"perf-analyzer.sh could not fetch perf_analyzer: {output[-500:]}")
        raise AssertionError(f"perf-analyzer.sh failed:\n{output}")
    return Path(run.stdout.strip().splitlines()[-1])

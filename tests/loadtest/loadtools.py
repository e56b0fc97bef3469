"""Running perf_analyzer and reading what it reported."""

from __future__ import annotations

import csv
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass
class PerfRun:
    """One perf_analyzer run: its exit code, output and the CSV rows (one per concurrency)."""

    returncode: int
    output: str
    rows: list[dict[str, str]]

    @property
    def request_count(self) -> int:
        """The requests perf_analyzer counted (client side), over every concurrency."""
        return sum(int(n) for n in re.findall(r"Client:\s*\n\s*Request count: (\d+)", self.output))


def run_perf_analyzer(
    binary: Path, target: str, model: str, *args: str, out: Path, timeout: float = 300
) -> PerfRun:
    """``perf_analyzer -i grpc -u TARGET -m MODEL ARGS -f out/perf.csv``."""
    out.mkdir(parents=True, exist_ok=True)
    report = out / "perf.csv"
    command = [str(binary), "-i", "grpc", "-u", target, "-m", model, *args, "-f", str(report)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    rows = list(csv.DictReader(report.open())) if report.is_file() else []
    return PerfRun(run.returncode, f"$ {' '.join(command)}\n{run.stdout}{run.stderr}", rows)

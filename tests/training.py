"""Run `bertserve` sub-commands the way a user does, for the fine-tuning tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CLI = (sys.executable, "-m", "bertserve.client.cli")


def bertserve_cli(
    *args: str, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``bertserve ARGS`` in a subprocess (as a user would); its output, never raising."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=env)


def finetuned(repo: Path, name: str, data: Path, *args: str) -> Path:
    """`bertserve finetune ... --out REPO --name NAME` (fp32, fp32-opt, int8); the model folder."""
    done = bertserve_cli(
        "finetune",
        *args,
        *("--data", str(data), "--out", str(repo), "--name", name),
        *("--variants", "fp32,fp32-opt,int8", "--no-progress"),
    )
    assert done.returncode == 0, done.stderr
    return repo / name

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


def finetuned(
    repo: Path, name: str, data: Path, *args: str, variants: str = "fp32,fp32-opt,int8"
) -> Path:
    """`bertserve finetune ARGS --data DATA --out REPO --name NAME`; the model folder."""
    done = bertserve_cli(
        "finetune",
        *args,
        *("--data", str(data), "--out", str(repo), "--name", name),
        *("--variants", variants, "--no-progress"),
    )
    assert done.returncode == 0, done.stderr
    return repo / name

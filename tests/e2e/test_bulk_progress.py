"""Progress of the bulk CLI on a real server: shown from the first batch (not once per
--read-ahead window), in a log only when asked, never with --no-progress."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from bertserve.bench.corpus import corpus

CLI = [sys.executable, "-m", "bertserve.client.cli", "embed"]
ROWS = 200


def bulk(live_server, tmp_path, *flags: str) -> subprocess.CompletedProcess:
    source = tmp_path / "texts.txt"
    source.write_text("".join(f"{text}\n" for text in corpus(ROWS, seed=3)), encoding="utf-8")
    command = [*CLI, "--input", str(source), "--output", str(tmp_path / "out.npy")]
    command += ["--target", live_server.target, "--batch-size", "16", *flags]
    run = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert np.load(tmp_path / "out.npy").shape == (ROWS, 384)
    return run


def test_progress_from_the_first_batch_when_asked(live_server, tmp_path):
    # one read-ahead window holds the whole file: before, the first figure came with the end
    run = bulk(live_server, tmp_path, "--progress")
    lines = [line for line in run.stderr.splitlines() if " rows/s " in line]
    assert lines[0].startswith(f"16/{ROWS} rows (8.0%)  "), run.stderr
    assert " elapsed  ETA " in lines[0]
    assert lines[-1].startswith(f"{ROWS}/{ROWS} rows (100.0%)") and lines[-1].endswith("ETA 0s")
    assert "\r" not in run.stderr  # stderr is a pipe: plain lines
    assert run.stderr.rstrip().endswith(f"wrote {ROWS} vectors to {tmp_path / 'out.npy'}")


def test_no_progress_in_a_pipe_by_default_nor_when_refused(live_server, tmp_path):
    for flags in ((), ("--no-progress",)):
        run = bulk(live_server, tmp_path, *flags)
        assert " rows/s " not in run.stderr, run.stderr
        assert run.stderr.strip() == f"wrote {ROWS} vectors to {tmp_path / 'out.npy'}"

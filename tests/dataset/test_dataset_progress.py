"""``embed-dataset --progress``: a figure after the first part of the first block, not once
per block, and the block's parts joined back into the same vectors."""

from __future__ import annotations

import subprocess
import sys

from bertserve.dataset import read_output
from dataset_helpers import assert_matches, server_vectors

CLI = [sys.executable, "-m", "bertserve.client.cli", "embed-dataset"]


def test_progress_from_the_first_part_of_a_block(texts, live_server, model_repo, tmp_path):
    sample = texts[:700]
    source = tmp_path / "s.txt"
    source.write_text("".join(f"{text}\n" for text in sample), encoding="utf-8")
    out = tmp_path / "out"
    command = [*CLI, str(source), str(out), "--repo", str(model_repo), "--model", "minilm"]
    run = subprocess.run(
        [*command, "--block-rows", "600", "--progress"], capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stderr.splitlines() if " rows/s " in line]
    # parts of 512 rows: the first figure comes before the first block of 600 is written
    assert lines[0].startswith("512/700 rows (73.1%)  "), run.stderr
    assert lines[-1].startswith("700/700 rows (100.0%)") and lines[-1].endswith("ETA 0s")
    expected = server_vectors(live_server.target, sample)
    assert_matches(read_output(out), [f"s.txt:{i}" for i in range(1, 701)], expected)

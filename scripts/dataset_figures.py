"""Rows per second of one real corpus, five ways, in one run on this machine: `embed-dataset`
with the local engine, with Ray (1 actor x 2 threads, 2 actors x 1 thread), `bertserve embed
--input` against a server, and one Embed call to that server.

    .venv/bin/python scripts/dataset_figures.py [--rows 2000] [--repo DIR]

Prints the CPU (model and vector flags), the load (uptime) and a JSON line per figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def machine() -> None:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
    for line in lscpu:
        if line.startswith(("Model name", "CPU(s):")):
            print(line)
        if line.startswith("Flags"):
            flags = [f for f in line.split()[1:] if f.startswith(("avx", "amx")) or f == "fma"]
            print("Vector flags:", " ".join(flags))
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of process ``pid`` (every thread), or of this process and its
    finished children."""
    if pid is None:
        own = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    from bertserve.bench.corpus import corpus
    from bertserve.client import Client
    from bertserve.dataset import Job, read_output, run
    from conftest import CACHE, _export_key
    from servers import start_server

    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--repo", type=Path, default=CACHE / _export_key())
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    machine()
    texts = corpus(args.rows)  # 25% news paragraphs, 75% tweets, shuffled
    work = Path(tempfile.mkdtemp(prefix="dataset-figures-"))
    source = work / "corpus.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    import ray

    # Ray and the server stay up for every round; rounds alternate the five ways so that the
    # load of a shared machine, which drifts, falls on each of them alike
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    server = start_server(args.repo, "--variant", "minilm=fp32-opt", metrics=False)
    figures: list[dict] = []
    try:
        with Client(server.target, model="minilm", timeout=3600) as client:
            client.embed(texts[:64])  # warm
        for round_ in range(args.rounds):

            def record(name: str, **values: object) -> None:
                figures.append({"figure": name, "round": round_, "rows": len(texts), **values})  # noqa: B023
                print(json.dumps(figures[-1]), flush=True)

            with Client(server.target, model="minilm", timeout=3600) as client:
                started, cpu = time.perf_counter(), cpu_seconds(server.process.pid)
                served = client.embed(texts).sentence_embedding
                seconds = time.perf_counter() - started
                used = cpu_seconds(server.process.pid) - cpu
            record(
                "server: one Embed call",
                rows_per_second=round(len(texts) / seconds, 1),
                rows_per_cpu_second=round(len(texts) / used, 1),
            )
            started, cpu = time.perf_counter(), cpu_seconds(server.process.pid)
            subprocess.run(
                [sys.executable, "-m", "bertserve.client.cli", "embed", "--input", str(source)]
                + ["--output", str(work / f"bulk{round_}.parquet"), "--target", server.target]
                + ["--model", "minilm", "--no-progress"],
                check=True,
            )
            seconds = time.perf_counter() - started
            used = cpu_seconds(server.process.pid) - cpu
            record(
                "server: bertserve embed --input (bulk CLI)",
                rows_per_second=round(len(texts) / seconds, 1),
                rows_per_cpu_second=round(len(texts) / used, 1),
            )

            def job(name: str, **kwargs: object) -> None:
                out = work / f"{name.replace(' ', '-')}-{round_}"  # noqa: B023
                report = run(
                    Job(
                        str(source),
                        str(out),
                        "minilm",
                        repo=str(args.repo),
                        progress=False,
                        block_rows=250,
                        **kwargs,
                    )
                )
                table = read_output(out)
                ids = table.column("id").to_pylist()
                vectors = np.stack(table.column("vector").to_numpy(zero_copy_only=False))
                order = [int(i.rsplit(":", 1)[1]) - 1 for i in ids]
                record(
                    name,
                    rows_per_second=report["rows_per_second"],
                    steady_rows_per_second=report["steady_rows_per_second"],
                    rows_per_cpu_second=report["rows_per_cpu_second"],
                    max_abs_delta_to_server=float(np.max(np.abs(vectors - served[order]))),  # noqa: B023
                )

            job("embed-dataset --engine local (2 threads)", threads=2)
            job("embed-dataset --engine ray 1x2", engine="ray", actors=1, threads=2)
            job("embed-dataset --engine ray 2x1", engine="ray", actors=2, threads=1)
            job("embed-dataset --engine local (1 thread)", threads=1)
    finally:
        server.stop()
        ray.shutdown()
    machine()


if __name__ == "__main__":
    main()

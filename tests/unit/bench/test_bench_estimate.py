"""``bertserve bench`` before it runs: its estimate from measured steps, what --quick sets,
and a missing extra said in one line (no model, no server)."""

from __future__ import annotations

import pytest
from bertserve.bench import cli
from bertserve.bench.estimate import (
    latency_seconds,
    load_seconds,
    peers_seconds,
    rescaled,
    say,
)
from bertserve.client.cli import build_parser, main


def test_load_estimate_is_seconds_per_setting_plus_measured_warmups_and_tails():
    per_request = {("fp32-opt", 16, 1): 0.01, ("fp32-opt", 128, 1): 0.1}
    settings = [("fp32-opt", 16, 1, 1), ("fp32-opt", 16, 1, 8), ("fp32-opt", 128, 1, 1)]
    seconds, upper = load_seconds(settings, per_request, seconds=2.0, requests=None, warmup=3)
    # each setting: its seconds, the warm-up, and the last request of each caller in flight
    tails = 1 * 0.01 + 8 * 0.01 + 1 * 0.1
    assert seconds == pytest.approx(3 * 2.0 + 3 * (0.01 + 0.01 + 0.1) + tails) and not upper


def test_load_estimate_by_request_count_is_an_upper_bound_from_one_caller():
    per_request = {("int8", 128, 8): 0.5}
    seconds, upper = load_seconds(
        [("int8", 128, 8, 1), ("int8", 128, 8, 16)], per_request, seconds=None, requests=100,
        warmup=2,
    )  # fmt: skip
    assert seconds == pytest.approx(2 * (102 * 0.5)) and upper


def test_peers_estimate_after_the_first_round():
    left = peers_seconds(
        round_seconds=60.0,
        repeats=3,
        single_seconds=[0.004, 0.006],
        latency_requests=300,
        sweep_levels=4,
        variants=2,
        sweep_seconds=5.0,
    )
    # two more rounds, (20 warm-up + 300) single requests of both ways, 2 x 4 sweeps of 5 s
    assert left == pytest.approx(120 + 320 * 0.01 + 40)
    assert peers_seconds(
        round_seconds=9.0, repeats=1, single_seconds=[], latency_requests=50, sweep_levels=2,
        variants=1, sweep_seconds=1.0,
    ) == pytest.approx(2.0)  # fmt: skip


def test_latency_estimate_and_rescaling():
    assert latency_seconds(
        round_seconds=0.02, requests=600, variants=2, sweep_levels=2, sweep_seconds=5.0
    ) == pytest.approx(2 * (12 + 10))
    assert rescaled(30.0, actual=20.0, estimated=10.0) == 60.0  # twice as slow so far
    assert rescaled(30.0, actual=0.0, estimated=10.0) == 30.0


def test_said_as_a_person_reads_it():
    assert say(83) == "about 1m23s"
    assert say(83, upper=True, already=14.2) == "at most 1m23s more (14s so far)"


def parse(*words: str):
    return cli.resolve(build_parser().parse_args(["bench", *words]))


def test_quick_is_short_and_explicit_options_win():
    full, quick = parse(), parse("--quick")
    assert (full.duration, full.texts, full.repeats, full.sweep_seconds) == (None, 1024, 3, 5.0)
    assert quick.duration == 1.0 and quick.requests is None
    peers = parse("--peers", "--quick")
    assert (peers.texts, peers.repeats, peers.latency_requests, peers.sweep_seconds) == (
        64, 1, 50, 1.0,
    )  # fmt: skip
    assert peers.concurrency == [1, 8]
    assert parse("--quick", "--requests", "40").duration is None
    assert parse("--peers", "--quick", "--texts", "48", "--concurrency", "1,4").texts == 48
    assert parse("--peers", "--quick", "--concurrency", "1,4").concurrency == [1, 4]
    assert parse("--latency").latency_requests == 600
    assert parse("--peers").latency_requests == 300


def test_a_missing_extra_is_one_line_naming_the_pip_command(monkeypatch, capsys, tmp_path):
    # find_spec answers as it would in an environment without the [bench] extra
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "onnxruntime" else real(name, *a),
    )
    assert main(["bench", "--peers", "--quick", "--repo", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == "bertserve bench: needs onnxruntime: pip install -e '.[bench]' (in this repository)\n"
    )


def test_the_wrote_line_names_only_files_that_exist(tmp_path):
    table = tmp_path / "peers.md"
    table.write_text("|")
    assert cli.wrote([table], "no peers.png: matplotlib is not installed") == (
        f"wrote {table} (no peers.png: matplotlib is not installed)"
    )
    with pytest.raises(RuntimeError, match="not written: .*peers.png"):
        cli.wrote([table, tmp_path / "peers.png"])


def test_batch_cost_fit_recovers_a_known_model_and_never_goes_negative():
    from bertserve.bench.calibrate import cost, fit, probe_batches, shapes

    def seconds(n: int, length: int) -> float:
        return 0.01 + 1e-4 * n * length + 1e-7 * n * length * length

    points = [((8, length), seconds(8, length)) for length in (10, 60, 300)]
    coef = fit(points)
    assert coef == pytest.approx([0.01, 1e-4, 1e-7])
    assert cost(coef, [(32, 40), (32, 120)]) == pytest.approx(seconds(32, 40) + seconds(32, 120))
    noisy = fit([((8, 10), 0.05), ((8, 60), 0.02), ((8, 300), 0.5)])  # shorter took longer
    assert (noisy >= 0).all() and cost(noisy, [(8, 10)]) > 0
    lengths = [5, 40, 7, 300, 12, 9, 60, 18, 22, 11]
    assert probe_batches(lengths, size=3) == [[0, 2, 5], [4, 7, 8], [1, 6, 3]]
    assert shapes(lengths, [[0, 3], [1]]) == [(2, 300), (1, 40)]

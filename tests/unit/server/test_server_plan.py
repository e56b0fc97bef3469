"""The batcher's planner (server/plan.py): the cost model and the cheapest cut of waiting
sequences into batches."""

from __future__ import annotations

import numpy as np
import pytest
from bertserve.server.plan import MIN_OVERHEAD_S, CostModel, plan_batches

CPU = CostModel(overhead_s=1e-3, per_token_s=1.8e-4, per_token_length_s=1e-7)
GPU = CostModel(overhead_s=5e-3, per_token_s=2e-7, per_token_length_s=1e-10)


def padding(lengths: list[int], ends: list[int]) -> float:
    """Computed tokens over real tokens of a plan over sorted lengths."""
    computed, start = 0, 0
    for end in ends:
        computed += (end - start) * lengths[end - 1]
        start = end
    return computed / sum(lengths)


def mixed_lengths(count: int, seed: int) -> list[int]:
    """Tweet-like and paragraph-like lengths (log-normal), sorted."""
    rng = np.random.default_rng(seed)
    return sorted(int(x) for x in np.clip(rng.lognormal(3.4, 0.7, count), 3, 512))


@pytest.mark.parametrize("seed", range(5))
def test_a_cpu_plan_keeps_padding_small_and_respects_the_limits(seed):
    lengths = mixed_lengths(256, seed)
    ends = plan_batches(lengths, CPU, max_size=64, max_tokens=8192)
    assert ends[-1] == len(lengths) and ends == sorted(set(ends))
    start = 0
    for end in ends:
        assert 1 <= end - start <= 64 and (end - start) * lengths[end - 1] <= 8192
        start = end
    assert padding(lengths, ends) <= 1.05
    # filling batches up to the budget, the old way, pads far more
    greedy, start = [], 0
    while start < len(lengths):
        end = start + 1
        while end < len(lengths) and end - start < 64 and (end + 1 - start) * lengths[end] <= 8192:
            end += 1
        greedy.append(end)
        start = end
    assert padding(lengths, greedy) > padding(lengths, ends)


def test_a_large_fixed_cost_per_batch_yields_larger_batches():
    lengths = mixed_lengths(256, 7)
    cpu = plan_batches(lengths, CPU, max_size=256, max_tokens=1 << 20)
    gpu = plan_batches(lengths, GPU, max_size=256, max_tokens=1 << 20)
    assert len(gpu) < len(cpu)
    assert padding(lengths, cpu) < padding(lengths, gpu)


def test_equal_lengths_fill_batches_from_the_shortest_end():
    assert plan_batches([5] * 10, CPU, max_size=3, max_tokens=1000) == [3, 6, 9, 10]
    assert plan_batches([600], CPU, max_size=8, max_tokens=512) == [1]  # one alone always fits


def test_the_cost_model_is_fitted_from_measurements():
    truth = CostModel(overhead_s=2e-3, per_token_s=1e-4, per_token_length_s=3e-7)
    shapes = [(1, 8), (1, 64), (8, 16), (8, 64), (2, 256), (4, 128)]
    rng = np.random.default_rng(0)
    samples = [(b, n, truth.seconds(b, n) * rng.uniform(0.98, 1.02)) for b, n in shapes]
    fitted = CostModel.fit(samples)
    for b, n in shapes:
        assert fitted.seconds(b, n) == pytest.approx(truth.seconds(b, n), rel=0.05)
    # noise that would make a term negative leaves it at zero, never below
    flat = CostModel.fit([(1, 8, 1e-3), (1, 64, 1e-3), (8, 64, 1e-3), (2, 256, 1e-3)])
    assert min(flat.overhead_s, flat.per_token_s, flat.per_token_length_s) >= 0


def test_a_fit_that_finds_no_fixed_cost_still_batches():
    # timings exactly proportional to tokens (a busy machine's warm-up can look like this)
    samples = [(b, n, b * n * 2e-4) for b, n in [(1, 8), (1, 64), (8, 16), (8, 64), (2, 256)]]
    fitted = CostModel.fit(samples)
    assert fitted.overhead_s == MIN_OVERHEAD_S
    assert plan_batches([302] * 64, fitted, max_size=64, max_tokens=1 << 15) == [64]

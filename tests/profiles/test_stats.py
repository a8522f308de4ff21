import numpy as np
import pytest

from profiles import stats


def test_summary_percentiles_in_milliseconds():
    trials = [[0.001] * 98 + [0.002, 0.010]]
    summary = stats.summary_ms(trials)
    assert summary["p50"] == pytest.approx(1.0) and summary["p99"] > 1.5 and summary["calls"] == 100


def test_speedup_interval_contains_the_true_ratio():
    rng = np.random.default_rng(0)
    dense = [list(0.010 + rng.normal(0, 0.0005, 50)) for _ in range(10)]
    pruned = [list(0.005 + rng.normal(0, 0.0005, 50)) for _ in range(10)]
    speedup, (low, high) = stats.speedup_with_ci(dense, pruned)
    assert low < 2.0 < high and low < speedup < high and high - low < 0.3


def test_equal_models_have_an_interval_around_one():
    rng = np.random.default_rng(1)
    same = lambda: [list(0.004 + rng.normal(0, 0.0003, 40)) for _ in range(10)]  # noqa: E731
    _, (low, high) = stats.speedup_with_ci(same(), same())
    assert low < 1.0 < high


def test_fixed_cost_from_two_points():
    # latency = 2 ms + 1 ms per 100 MMACs: 4 ms at 200M, 3 ms at 100M
    assert stats.fixed_cost_ms(4.0, 3.0, 200, 100) == pytest.approx(2.0)
    assert stats.fixed_cost_ms(4.0, 3.0, 100, 100) is None

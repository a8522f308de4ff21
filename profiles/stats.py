"""Latency summaries and the bootstrap confidence interval of a speedup."""

from __future__ import annotations

import numpy as np


def summary_ms(trials: list[list[float]]) -> dict[str, float]:
    calls = np.concatenate([np.asarray(t) for t in trials]) * 1e3
    trial_medians = np.array([np.median(t) for t in trials]) * 1e3
    return {
        "p50": float(np.percentile(calls, 50)),
        "p90": float(np.percentile(calls, 90)),
        "p99": float(np.percentile(calls, 99)),
        "mean": float(calls.mean()),
        "calls": int(calls.size),
        # spread of the per-trial medians: how stable the measurement was
        "cov": float(trial_medians.std() / trial_medians.mean()) if trial_medians.mean() > 0 else 0.0,
    }


def speedup_with_ci(
    dense: list[list[float]], pruned: list[list[float]], resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, tuple[float, float]]:
    """dense p50 / pruned p50, and a paired bootstrap interval over trials (trial i of both models
    ran back to back, so resampling trial indices keeps that pairing)."""
    dense_arrays = [np.asarray(t) for t in dense]
    pruned_arrays = [np.asarray(t) for t in pruned]
    point = float(np.median(np.concatenate(dense_arrays)) / np.median(np.concatenate(pruned_arrays)))
    rng = np.random.default_rng(seed)
    count = len(dense_arrays)
    ratios = np.empty(resamples)
    for b in range(resamples):
        picks = rng.integers(0, count, count)
        ratios[b] = np.median(np.concatenate([dense_arrays[i] for i in picks])) / np.median(
            np.concatenate([pruned_arrays[i] for i in picks])
        )
    tail = (1.0 - level) / 2 * 100
    return point, (float(np.percentile(ratios, tail)), float(np.percentile(ratios, 100 - tail)))


def fixed_cost_ms(dense_ms: float, pruned_ms: float, dense_macs: int, pruned_macs: int) -> float | None:
    """Per-call time that does not scale with MACs, from latency = fixed + rate * MACs fitted through
    the two models. None when the two points do not determine it."""
    if dense_macs <= pruned_macs:
        return None
    fixed = (pruned_ms * dense_macs - dense_ms * pruned_macs) / (dense_macs - pruned_macs)
    return float(fixed) if fixed > 0 else 0.0

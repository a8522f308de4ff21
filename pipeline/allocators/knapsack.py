"""A multiple-choice knapsack, for budgets that add up over the groups (latency): every group takes one of its
options (a kept width with the score it keeps and the latency it costs), the kept score as high as the
latency allows. Dynamic programming over the budget cut into bins; an answer never exceeds the budget (costs are
rounded to the nearest bin, and up to whole bins when that overshoots)."""

from __future__ import annotations

import math

import numpy as np

BINS = 2000


def solve(options: dict[str, list[tuple[int, float, float]]], budget: float, bins: int = BINS) -> dict[str, int] | None:
    """{group: width} maximising the summed value with the summed cost <= `budget`, from
    `options` {group: [(width, value, cost), ...]}; None when even the cheapest options exceed it.
    Costs may be negative (savings against a reference): they are shifted by each group's cheapest."""
    names = [n for n in options if options[n]]
    cheapest = {n: min(c for _, _, c in options[n]) for n in names}
    room = budget - sum(cheapest.values())
    tolerance = 1e-12 * max(1.0, abs(budget))
    if room < -tolerance:
        return None
    if room <= tolerance:  # only the cheapest options fit: among ties, the most valuable
        return {n: max((o for o in options[n] if o[2] <= cheapest[n] + tolerance), key=lambda o: o[1])[0] for n in names}
    unit = room / bins
    # costs rounded to the nearest bin find exact fits; when that overshoots, rounded up (always within)
    for rounding in (round, math.ceil):
        chosen = _best(names, options, cheapest, unit, bins, rounding)
        if sum(c for n in names for w, _, c in options[n] if w == chosen[n]) <= budget + tolerance:
            return chosen
    return chosen


def _best(names, options, cheapest, unit: float, bins: int, rounding) -> dict[str, int]:
    best = np.full(bins + 1, -np.inf)
    best[0] = 0.0
    picks, costs = [], []
    for name in names:
        spent = [max(0, int(rounding((c - cheapest[name]) / unit - 1e-9))) for _, _, c in options[name]]
        new, pick = np.full(bins + 1, -np.inf), np.full(bins + 1, -1)
        for index, ((_, value, _), k) in enumerate(zip(options[name], spent)):
            if k > bins:
                continue
            candidate = np.full(bins + 1, -np.inf)
            candidate[k:] = best[: bins + 1 - k] + value
            better = candidate > new
            new[better], pick[better] = candidate[better], index
        best = new
        picks.append(pick)
        costs.append(spent)
    k = int(np.argmax(best))
    chosen = {}
    for name, pick, spent in zip(reversed(names), reversed(picks), reversed(costs)):
        index = int(pick[k])
        chosen[name] = options[name][index][0]
        k -= spent[index]
    return chosen

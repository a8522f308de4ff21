"""A multiple-choice knapsack, for budgets that add up over the groups (latency, MACs, units): every group
takes one of its options (a kept width with the value it keeps and what it costs), the kept value as high
as the budget allows. Dynamic programming over the budget cut into bins; an answer never exceeds the budget (costs are
rounded to the nearest bin, and up to whole bins when that overshoots)."""

from __future__ import annotations

import math

import numpy as np

BINS = 2000
FIXED_POINT_STEPS = 8


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


def fastest(cost, widths: dict[str, list[int]]) -> dict[str, int]:
    """The cheapest widths (not always the fewest: a kernel may be slow at some width), each group in
    turn at its cheapest with the others held, a few passes."""
    current = {name: w[-1] for name, w in widths.items()}
    for _ in range(3):
        for name, options in widths.items():
            costs = cost.group_costs(name, options, current)
            current[name] = options[min(range(len(options)), key=costs.__getitem__)]
    return current


def plan(cost, widths: dict[str, list[int]], worth, limit: float, cheapest: dict[str, int]) -> dict[str, int]:
    """The most valuable widths whose predicted cost is within `limit` (`cheapest` when none is).

    `cost` predicts a whole plan (predict(kept)) and one group's options with the others held
    (group_costs(name, widths, kept): what each width adds to `kept`, the other groups held); `worth`
    (pipeline.allocators.worth) answers the same for the value kept (total, group_values). A layer's
    cost (and what its MACs are worth) depends on two groups' widths, so both are linearised around the
    current plan and the knapsack re-solved until the plan stops moving."""
    best, best_value, budget, closest = None, -float("inf"), limit, None
    for _ in range(3):  # the linearisation may overshoot: tighten the knapsack's budget by the excess
        current = {name: w[-1] for name, w in widths.items()}
        for _ in range(FIXED_POINT_STEPS):
            table = {
                name: list(zip(w, worth.group_values(name, w, current), cost.group_costs(name, w, current)))
                for name, w in widths.items()
            }
            chosen = solve(table, budget - cost.predict(current)) or cheapest
            predicted, value = cost.predict(chosen), worth.total(chosen)
            if predicted <= limit and value > best_value:
                best, best_value = chosen, value
            if closest is None or predicted < closest[0]:
                closest = (predicted, chosen)
            if chosen == current:
                break
            current = chosen
        if best is not None:
            return fill(cost, widths, worth, limit, best)
        budget -= predicted - limit
    # where the linearised knapsack never got within the limit (groups coupled through many layers, as
    # residual streams are), narrow its closest plan step by step instead of jumping to the cheapest
    return fill(cost, widths, worth, limit, trim(cost, widths, worth, limit, closest[1]))


def trim(cost, widths: dict[str, list[int]], worth, limit: float, kept: dict[str, int]) -> dict[str, int]:
    """Narrow groups one step at a time until the plan is within `limit`, each time the step that gives up
    the least value per predicted millisecond saved (the cheapest widths when none saves any more)."""
    kept = dict(kept)
    predicted = cost.predict(kept)
    while predicted > limit:
        steps = narrowing_steps(cost, widths, worth, kept, predicted)
        if not steps:
            return kept
        _, name, width, _ = min(steps)
        kept[name] = width
        predicted = cost.predict(kept)
    return kept


def narrowing_steps(cost, widths: dict[str, list[int]], worth, kept: dict[str, int],
                    predicted: float) -> list[tuple[float, str, int, float]]:  # fmt: skip
    """Every group narrowed by one step from `kept` (predicted to cost `predicted`) that saves any cost:
    (value given up per cost saved, group, its narrower width, cost saved)."""
    steps = []
    for name, options in widths.items():
        narrower = [w for w in options if w < kept[name]]
        if narrower:
            saved = predicted - cost.predict({**kept, name: narrower[-1]})
            if saved > 0:
                now, then = worth.group_values(name, [kept[name], narrower[-1]], kept)
                steps.append(((now - then) / saved, name, narrower[-1], saved))
    return steps


def fill(cost, widths: dict[str, list[int]], worth, limit: float, kept: dict[str, int]) -> dict[str, int]:
    """Widen groups one step at a time while the plan stays within `limit`, the most valuable step first:
    what the linearised costs left unused (a layer's cost depends on two groups' widths)."""
    kept = dict(kept)
    while True:
        steps = []
        for name, options in widths.items():
            wider = [w for w in options if w > kept[name]]
            if wider and cost.predict({**kept, name: wider[0]}) <= limit:
                now, then = worth.group_values(name, [kept[name], wider[0]], kept)
                steps.append((then - now, name, wider[0]))
        if not steps:
            return kept
        _, name, width = max(steps)
        kept[name] = width

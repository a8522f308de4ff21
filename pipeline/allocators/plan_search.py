"""Widths chosen by measuring whole plans (pipeline.statistics.sensitivity.PlanLoss) rather than by
adding up per-group values: start at the uniform plan (one ratio for every group) nearest short of the
budget, then narrow one group by one block at a time, each time the step that costs least measured
loss per unit of cost saved (as NetAdapt steps by measured accuracy), until the plan is within it.

Starting from the uniform plan keeps what it does well (no group cut far while the others stay wide),
and each step is judged with all the other cuts in place. Only the steps the per-group values rank
cheapest are measured (CANDIDATES per step), so the cost stays a few dozen plans per budget."""

from __future__ import annotations

from collections.abc import Callable

from pipeline.allocators.base import kept_count
from pipeline.allocators.knapsack import narrowing_steps

CANDIDATES = 8  # steps measured whole per step taken
RATIO_STEPS = 100  # the uniform ratios tried for the start, 0.01 apart


def uniform_plans(groups, widths: dict[str, list[int]], round_to: int, max_unit_ratio: float) -> list[dict[str, int]]:
    """The distinct uniform plans (one ratio for every group, RATIO_STEPS apart; each width the nearest allowed
    at or below the ratio's), widest first."""
    sizes = {g.name: (g.size, g.kind) for g in groups if g.name in widths}
    plans = [{name: options[-1] for name, options in widths.items()}]
    for step in range(1, RATIO_STEPS):
        kept = {name: _allowed(widths[name], kept_count(size, step / RATIO_STEPS, round_to, max_unit_ratio, kind))
                for name, (size, kind) in sizes.items()}  # fmt: skip
        if kept != plans[-1]:
            plans.append(kept)
    return plans


def uniform_around(groups, widths: dict[str, list[int]], cost, limit: float, round_to: int,
                   max_unit_ratio: float) -> tuple[dict[str, int], dict[str, int] | None]:  # fmt: skip
    """The uniform plans either side of `limit`: the one removing most while its predicted cost is still
    above (the widest plan where that one is within already), and the next one, within (None if none is)."""
    plans = uniform_plans(groups, widths, round_to, max_unit_ratio)
    for index, kept in enumerate(plans):
        if cost.predict(kept) <= limit:
            return plans[max(index - 1, 0)], kept
    return plans[-1], None


def uniform_start(groups, widths: dict[str, list[int]], cost, limit: float, round_to: int,
                  max_unit_ratio: float) -> dict[str, int]:  # fmt: skip
    """Where the search starts: the uniform plan nearest short of `limit` (uniform_around)."""
    return uniform_around(groups, widths, cost, limit, round_to, max_unit_ratio)[0]


def _allowed(options: list[int], width: int) -> int:
    below = [w for w in options if w <= width]
    return below[-1] if below else options[0]


def descend(start: dict[str, int], widths: dict[str, list[int]], cost, limit: float,
            loss: Callable[[dict[str, int]], float], worth) -> dict[str, int]:  # fmt: skip
    """From `start`, one block of one group at a time until the predicted cost is within `limit` (or no
    step saves any more): of the CANDIDATES steps losing least value per cost saved by `worth`, the
    one whose whole plan measures the least added loss per cost saved."""
    kept, here = dict(start), loss(start)
    predicted = cost.predict(kept)
    while predicted > limit:
        steps = narrowing_steps(cost, widths, worth, kept, predicted)
        if not steps:
            break
        steps.sort(key=lambda s: s[0])
        cheapest = [({**kept, name: width}, saved) for _, name, width, saved in steps[:CANDIDATES]]
        kept = min(cheapest, key=lambda c: (loss(c[0]) - here) / c[1])[0]
        here, predicted = loss(kept), cost.predict(kept)
    return kept

"""Widths chosen by measuring whole plans (pipeline.statistics.sensitivity.PlanDivergence) rather than by
adding up per-group values: start at the uniform plan (one ratio for every group) nearest short of the
budget, then narrow one group by one block at a time, each time the step that costs least measured
divergence per unit of cost saved (as NetAdapt steps by measured accuracy), until the plan is within it.

Starting from the uniform plan keeps what it does well (no group cut far while the others stay wide),
and each step is judged with all the other cuts in place. Only the steps the per-group values rank
cheapest are measured (CANDIDATES per step), so the cost stays a few dozen plans per budget."""

from __future__ import annotations

from collections.abc import Callable

from pipeline.allocators.base import kept_count
from pipeline.allocators.knapsack import narrowing_steps

CANDIDATES = 8  # steps measured whole per step taken
RATIO_STEPS = 100  # the uniform ratios tried for the start, 0.01 apart


def uniform_start(groups, widths: dict[str, list[int]], cost, limit: float, round_to: int,
                  max_unit_ratio: float) -> dict[str, int]:  # fmt: skip
    """The uniform plan that removes most while its predicted cost is still above `limit` (each width the
    nearest allowed at or below the ratio's), or the widest plan where that one is within `limit` already."""
    sizes = {g.name: (g.size, g.kind) for g in groups if g.name in widths}
    start = {name: options[-1] for name, options in widths.items()}
    for step in range(1, RATIO_STEPS):
        uniform = {
            name: kept_count(size, step / RATIO_STEPS, round_to, max_unit_ratio, kind) for name, (size, kind) in sizes.items()
        }
        kept = {name: _allowed(widths[name], width) for name, width in uniform.items()}
        if cost.predict(kept) <= limit:
            break
        start = kept
    return start


def _allowed(options: list[int], width: int) -> int:
    below = [w for w in options if w <= width]
    return below[-1] if below else options[0]


def descend(start: dict[str, int], widths: dict[str, list[int]], cost, limit: float,
            divergence: Callable[[dict[str, int]], float], worth) -> dict[str, int]:  # fmt: skip
    """From `start`, one block of one group at a time until the predicted cost is within `limit` (or no
    step saves any more): of the CANDIDATES steps losing least value per cost saved by `worth`, the
    one whose whole plan measures the least added divergence per cost saved."""
    kept, here = dict(start), divergence(start)
    predicted = cost.predict(kept)
    while predicted > limit:
        steps = narrowing_steps(cost, widths, worth, kept, predicted)
        if not steps:
            break
        steps.sort(key=lambda s: s[0])
        cheapest = [({**kept, name: width}, saved) for _, name, width, saved in steps[:CANDIDATES]]
        kept = min(cheapest, key=lambda c: (divergence(c[0]) - here) / c[1])[0]
        here, predicted = divergence(kept), cost.predict(kept)
    return kept

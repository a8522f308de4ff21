"""--allocate sensitivity: per-group widths from measured sensitivity (pipeline.statistics.sensitivity: how
far the outputs move when only that group is cut to a width) instead of one ratio for all. The widths
whose summed sensitivity is least within the MACs target (--macs-reduction) or the kept-unit count
(--ratio), by the knapsack planner; the criterion's scores still choose which units go within a group."""

from __future__ import annotations

from dataclasses import replace

from pipeline.allocators.base import Allocation, Request, width_options
from pipeline.allocators.costs import MacsCost, UnitsCost
from pipeline.allocators.knapsack import fastest, plan
from pipeline.allocators.worth import Additive
from pipeline.core.errors import ConfigError

TOLERANCE = 0.05
TIE_BONUS = 1e-6


def allocate(request: Request) -> Allocation:
    widths = {g.name: width_options(g, request) for g in request.groups if g.name in request.scores}
    worth = Additive(sensitivity_values(request.sensitivity, widths))
    cost, goal, unit = _budget(request)
    kept = plan(cost, widths, worth, cost.dense / goal, fastest(cost, widths))
    reached = cost.dense / max(cost.predict(kept), 1.0)
    if request.macs_reduction is not None and reached < goal * (1.0 - TOLERANCE):
        raise ConfigError(
            f"--macs-reduction {goal} is out of reach: the closest is {reached:.2f}x "
            f"(rounding to {request.round_to} channels, at most {request.max_unit_ratio:.0%} of any group removed)"
        )
    note = f"sensitivity: widths of least measured sensitivity within {goal:.2f}x fewer {unit} (reached {reached:.2f}x)"
    return Allocation(kept, None, request.round_to, [note], {"sensitivity": sensitivity_details(request.sensitivity, kept)})


def _budget(request: Request) -> tuple[MacsCost | UnitsCost, float, str]:
    """The cost the budget counts, the reduction it asks for, and the unit it is named in."""
    if request.macs_reduction is not None:
        return MacsCost(request.estimator), request.macs_reduction, "MACs"
    return UnitsCost(request.groups), 1.0 / (1.0 - request.ratio), "units"


def bounds_for(request: Request) -> dict[str, int] | None:
    """The criterion's own counts as upper bounds of the widths (CoSeP, C-SWAP), or None where they
    alone already cut more than the budget asks: bounded there, the allocation could only overshoot
    the target, and the curves choose alone instead."""
    if not request.own:
        return request.own
    cost, goal, _ = _budget(request)
    widest = {g.name: width_options(g, request)[-1] for g in request.groups if g.name in request.scores}
    return request.own if cost.dense / max(cost.predict(widest), 1.0) <= goal else None


def block_for(request: Request) -> int:
    """The channel block to measure and allocate on: the requested one, or, where it is only the target's
    default, halved until the fewest-MACs widths reach --macs-reduction (as the MACs search relaxes it).
    Decided before the curves are measured, so that every width allocated is a width measured."""
    step = request.round_to
    if request.macs_reduction is None or not request.round_to_is_default:
        return step
    cost = MacsCost(request.estimator)
    while step > 1:
        widths = {g.name: width_options(g, replace(request, round_to=step)) for g in request.groups if g.name in request.scores}
        if cost.dense / max(cost.predict(fastest(cost, widths)), 1.0) >= request.macs_reduction:
            break
        step //= 2
    return step


def sensitivity_values(curves: dict[str, dict[int, float]], widths: dict[str, list[int]]) -> dict[str, dict[int, float]]:
    """Knapsack values: minus each group's interpolated sensitivity at each of its widths, plus a bonus
    for the fraction kept too small to outweigh any measured difference, so that where the curves are
    flat (a group nothing depends on) the budget is still used rather than cut beyond it."""
    largest = max((v for curve in curves.values() for v in curve.values()), default=0.0)
    bonus = TIE_BONUS * (largest or 1.0)
    return {
        name: {w: -v + bonus * w / max(options) for w, v in interpolated(monotone(curves[name]), options).items()}
        for name, options in widths.items()
    }


def monotone(curve: dict[int, float]) -> dict[int, float]:
    """The curve made non-increasing in the width kept: keeping more units never costs more, and a
    measured dip below a wider width's value (or below zero) is noise."""
    out, highest = {}, 0.0
    for width in sorted(curve, reverse=True):
        highest = max(highest, curve[width])
        out[width] = highest
    return dict(sorted(out.items()))


def sensitivity_details(curves: dict[str, dict[int, float]], kept: dict[str, int]) -> dict:
    """For metrics.json and the report's plot: each group's measured curve and the width chosen."""
    return {name: {"curve": {str(w): v for w, v in curve.items()}, "kept": kept.get(name)} for name, curve in curves.items()}


def interpolated(curve: dict[int, float], widths: list[int]) -> dict[int, float]:
    """The curve at every one of `widths`, linear between its measured widths (held beyond them)."""
    known = sorted(curve)
    out = {}
    for width in widths:
        above = next((k for k in known if k >= width), known[-1])
        below = next((k for k in reversed(known) if k <= width), known[0])
        share = 0.0 if above == below else (width - below) / (above - below)
        out[width] = curve[below] + share * (curve[above] - curve[below])
    return out

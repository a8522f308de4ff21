"""--ratio: one fraction of the units, spread by the ranking (or, for a criterion's own counts, the
scale whose removed fraction is closest to it)."""

from __future__ import annotations

from pipeline.allocators.base import Allocation, Request, removed_fraction, spread_for


def allocate(request: Request) -> Allocation:
    spread = spread_for(request, request.round_to)
    if request.own:
        knob = min(
            (i / 400 for i in range(401)), key=lambda k: abs(removed_fraction(request.groups, spread.kept(k)) - request.ratio)
        )
        return Allocation(spread.kept(knob), knob, request.round_to)
    return Allocation(spread.kept(request.ratio), request.ratio, request.round_to)

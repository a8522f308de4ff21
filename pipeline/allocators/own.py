"""The criterion's own per-group counts (CoSeP, C-SWAP): as they are without a budget flag, scaled by
one factor to meet --ratio or --macs-reduction."""

from __future__ import annotations

from pipeline.allocators import macs, ratio
from pipeline.allocators.base import Allocation, Request, clamp, removed_fraction


def as_chosen(request: Request) -> Allocation:
    """The counts as they are, only kept within what removal allows (>= 1 unit, at most
    `max_unit_ratio` removed)."""
    kept, clamped = {}, []
    for g in request.groups:
        if g.name not in request.own:
            continue
        kept[g.name] = clamp(g.size, request.own[g.name], 1, request.max_unit_ratio)
        if kept[g.name] != request.own[g.name]:
            clamped.append(g.name)
    notes = []
    if clamped:
        notes.append(
            f"{len(clamped)} group(s) kept more units than the criterion chose: at most {request.max_unit_ratio:.0%} of a "
            f"group is removed ({', '.join(clamped[:3])}{', ...' if len(clamped) > 3 else ''})"
        )
    return Allocation(kept, removed_fraction(request.groups, kept), 1, notes)


def scaled(request: Request) -> Allocation:
    return (macs if request.macs_reduction is not None else ratio).allocate(request)

"""What every allocator shares: the request it answers, the allocation it returns, kept counts rounded
to the runtime's channel block, and the two ways of spreading one knob over the groups.

"uniform" removes the same fraction of every group; "global" keeps every unit whose score clears one
threshold shared by all groups (scores must then be comparable across layers: raw for VBP, normalised
per layer for SNIP); the criterion's own counts (CoSeP, C-SWAP) are scaled by one factor."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from pipeline.pruning.surgery import UnitGroup


@dataclass
class Request:
    groups: list[UnitGroup]
    scores: dict[str, torch.Tensor]
    estimator: object  # pipeline.pruning.macs.MacsEstimator
    round_to: int
    round_to_is_default: bool  # a default rounding may be relaxed to meet a MACs target; an explicit one never is
    max_unit_ratio: float
    ranking: str = "uniform"
    ratio: float | None = None
    macs_reduction: float | None = None
    own: dict[str, int] | None = None  # the criterion's own per-group counts, where they apply
    latency: object | None = None  # pipeline.latency.candidates.LatencyBudget, for the latency allocator
    sensitivity: dict | None = None  # {group: {width: measured divergence}} (pipeline.statistics.sensitivity)
    plan_loss: object | None = None  # kept -> a whole plan's measured loss (sensitivity.PlanLoss)


@dataclass
class Allocation:
    kept: dict[str, int]
    knob: float | None  # the search's ratio or scale (what the budget was met with)
    round_to: int
    notes: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)  # what the allocator measured (the latency rounds), for metrics.json


def step_of(kind: str, round_to: int) -> int:
    return 1 if kind == "head" else round_to


def clamp(size: int, kept: float, step: int, max_unit_ratio: float) -> int:
    """Round a kept count to the block, within [floor, size]; too-narrow groups stay whole."""
    if size <= step:
        return size
    return int(min(size, max(round(kept / step) * step, step, floor_of(size, step, max_unit_ratio))))


def floor_of(size: int, step: int, max_unit_ratio: float) -> int:
    """The fewest units a group may keep: at most `max_unit_ratio` removed, rounded up to the block."""
    return math.ceil(size * (1.0 - max_unit_ratio) / step) * step


def kept_count(size: int, ratio: float, round_to: int, max_unit_ratio: float, kind: str = "channel") -> int:
    if ratio <= 0.0:
        return size
    return clamp(size, size * (1.0 - ratio), step_of(kind, round_to), max_unit_ratio)


def kept_counts(groups: list[UnitGroup], ratio: float, round_to: int, max_unit_ratio: float) -> dict[str, int]:
    return {g.name: kept_count(g.size, ratio, round_to, max_unit_ratio, g.kind) for g in groups}


def global_kept(
    groups: list[UnitGroup], scores: dict[str, torch.Tensor], threshold: float, round_to: int, max_unit_ratio: float
) -> dict[str, int]:
    """Per group, the units scoring at least `threshold`, rounded and clamped."""
    kept = {}
    for g in groups:
        above = int((scores[g.name] >= threshold).sum())
        kept[g.name] = g.size if above == g.size else clamp(g.size, above, step_of(g.kind, round_to), max_unit_ratio)
    return kept


class RankedSpread:
    """Kept counts as a function of one knob in [0, 1] (0 keeps everything), for either ranking."""

    def __init__(self, groups, scores, ranking: str, round_to: int, max_unit_ratio: float):
        self.groups = [g for g in groups if g.name in scores]
        self.scores, self.ranking, self.round_to, self.max_unit_ratio = scores, ranking, round_to, max_unit_ratio
        if ranking == "global":
            pooled = torch.cat([scores[g.name].double() for g in self.groups]) if self.groups else torch.zeros(1)
            self.sorted_scores = pooled.sort().values

    def kept(self, knob: float) -> dict[str, int]:
        if knob <= 0.0:
            return {g.name: g.size for g in self.groups}
        if self.ranking == "uniform":
            return kept_counts(self.groups, knob, self.round_to, self.max_unit_ratio)
        # global: remove the lowest `knob` fraction of all scored units (before rounding)
        index = min(int(knob * len(self.sorted_scores)), len(self.sorted_scores) - 1)
        threshold = float(self.sorted_scores[index])
        return global_kept(self.groups, self.scores, threshold, self.round_to, self.max_unit_ratio)


class ScaledSpread:
    """For criteria that choose each group's kept count themselves (CoSeP, C-SWAP): a budget flag
    scales those counts by one factor, so the layers keep their relative widths. The knob runs
    geometrically from the factor that keeps everything (0) to 1/100 of the chosen counts (1)."""

    ranking = "scaled"
    SMALLEST = 0.01

    def __init__(self, groups, own: dict[str, int], round_to: int, max_unit_ratio: float):
        self.groups = [g for g in groups if g.name in own]
        self.own, self.round_to, self.max_unit_ratio = own, round_to, max_unit_ratio
        self.largest = max([g.size / max(own[g.name], 1) for g in self.groups], default=1.0)

    def factor(self, knob: float) -> float:
        return self.largest ** (1.0 - knob) * self.SMALLEST**knob

    def kept(self, knob: float) -> dict[str, int]:
        if knob <= 0.0:
            return {g.name: g.size for g in self.groups}
        factor = self.factor(knob)
        return {
            g.name: g.size
            if self.own[g.name] * factor >= g.size
            else clamp(g.size, self.own[g.name] * factor, step_of(g.kind, self.round_to), self.max_unit_ratio)
            for g in self.groups
        }


def spread_for(request: Request, round_to: int):
    """The knob -> kept counts map a ratio or MACs budget is met with."""
    if request.own:
        return ScaledSpread(request.groups, request.own, round_to, request.max_unit_ratio)
    return RankedSpread(request.groups, request.scores, request.ranking, round_to, request.max_unit_ratio)


def width_options(group, request: Request) -> list[int]:
    """The widths a group may keep: its channel block from the fewest allowed to all (or to the criterion's own count)."""
    step = step_of(group.kind, request.round_to)
    if group.size <= step:
        return [group.size]
    low = floor_of(group.size, step, request.max_unit_ratio)
    high = group.size
    if request.own and group.name in request.own:  # the criterion's own count is an upper bound
        high = min(group.size, max(low, -(-request.own[group.name] // step) * step))
    widths = list(range(low, high + 1, step))
    return widths if widths[-1] == high else [*widths, high]


def removed_fraction(groups, kept: dict[str, int]) -> float:
    total = sum(g.size for g in groups if g.name in kept)
    return 1.0 - sum(kept.values()) / max(total, 1)


def removal_of(groups, scores: dict[str, torch.Tensor], kept: dict[str, int]) -> dict[str, list[int]]:
    """{group: the units it loses}: all but its `kept` highest-scored, for every group `kept` names."""
    return {g.name: lowest(scores[g.name], kept[g.name]) for g in groups if g.name in kept}


def lowest(scores: torch.Tensor, kept: int) -> list[int]:
    """Indices of the units to remove: all but the `kept` highest scores (ties: lower index kept)."""
    size = scores.numel()
    if kept >= size:
        return []
    order = sorted(range(size), key=lambda u: (float(scores[u]), -u))
    return sorted(order[: size - kept])

"""How many units each group keeps, and which.

Two ways to spread the budget: "uniform" removes the same fraction of every group; "global" keeps
every unit whose score clears one threshold shared by all groups (scores must then be comparable
across layers: raw for VBP, normalised per layer for SNIP). The budget itself is a ratio of units
or a MACs reduction to reach; widths are rounded to the runtime's channel block so the runtime does
not pad them back."""

from __future__ import annotations

import math

import torch

from pipeline.core.errors import ConfigError
from pipeline.pruning.surgery import UnitGroup

TOLERANCE = 0.05  # --macs-reduction is met within 5%


def _step(kind: str, round_to: int) -> int:
    return 1 if kind == "head" else round_to


def _clamp(size: int, kept: float, step: int, max_unit_ratio: float) -> int:
    """Round a kept count to the block, within [floor, size]; too-narrow groups stay whole."""
    if size <= step:
        return size
    floor = math.ceil(size * (1.0 - max_unit_ratio) / step) * step
    return int(min(size, max(round(kept / step) * step, step, floor)))


def kept_count(size: int, ratio: float, round_to: int, max_unit_ratio: float, kind: str = "channel") -> int:
    if ratio <= 0.0:
        return size
    return _clamp(size, size * (1.0 - ratio), _step(kind, round_to), max_unit_ratio)


def kept_counts(groups: list[UnitGroup], ratio: float, round_to: int, max_unit_ratio: float) -> dict[str, int]:
    return {g.name: kept_count(g.size, ratio, round_to, max_unit_ratio, g.kind) for g in groups}


def global_kept(
    groups: list[UnitGroup], scores: dict[str, torch.Tensor], threshold: float, round_to: int, max_unit_ratio: float
) -> dict[str, int]:
    """Per group, the units scoring at least `threshold`, rounded and clamped."""
    kept = {}
    for g in groups:
        above = int((scores[g.name] >= threshold).sum())
        kept[g.name] = g.size if above == g.size else _clamp(g.size, above, _step(g.kind, round_to), max_unit_ratio)
    return kept


class Allocator:
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


class ScaledAllocator:
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
            else _clamp(g.size, self.own[g.name] * factor, _step(g.kind, self.round_to), self.max_unit_ratio)
            for g in self.groups
        }


def own_budget(groups, own: dict[str, int], max_unit_ratio: float) -> tuple[dict[str, int], list[str]]:
    """The criterion's counts as they are, only kept within what removal allows (>= 1 unit, at most
    `max_unit_ratio` removed)."""
    kept, clamped = {}, []
    for g in groups:
        if g.name not in own:
            continue
        kept[g.name] = _clamp(g.size, own[g.name], 1, max_unit_ratio)
        if kept[g.name] != own[g.name]:
            clamped.append(g.name)
    notes = (
        [
            f"{len(clamped)} group(s) kept more units than the criterion chose: at most {max_unit_ratio:.0%} of a group "
            f"is removed ({', '.join(clamped[:3])}{', ...' if len(clamped) > 3 else ''})"
        ]
        if clamped
        else []
    )
    return kept, notes


def removed_fraction(groups, kept: dict[str, int]) -> float:
    total = sum(g.size for g in groups if g.name in kept)
    return 1.0 - sum(kept.values()) / max(total, 1)


def search(allocator: Allocator, estimator, target: float, steps: int = 400) -> tuple[float, dict[str, int], float]:
    """The knob whose MACs reduction is closest to `target`: (knob, kept counts, reached)."""
    best = (0.0, allocator.kept(0.0), 1.0)
    top = allocator.max_unit_ratio if allocator.ranking == "uniform" else 1.0
    for i in range(1, steps + 1):
        knob = top * i / steps
        kept = allocator.kept(knob)
        reached = estimator.dense / max(estimator.estimate(kept), 1)
        if abs(reached - target) < abs(best[2] - target):
            best = (knob, kept, reached)
    return best


def plan_budget(
    groups,
    scores,
    estimator,
    ratio: float | None,
    macs_reduction: float | None,
    round_to: int,
    round_to_is_default: bool,
    max_unit_ratio: float,
    ranking: str = "uniform",
    own: dict[str, int] | None = None,
):
    """(knob, kept counts, round_to used, notes). `own`: the counts a criterion chose itself, used as
    they are without a budget flag and scaled to meet one. With a MACs target a default rounding is
    relaxed (halved) when it makes the target unreachable; an explicit --round-to never is."""
    notes: list[str] = []

    def allocator_for(step: int):
        return (
            ScaledAllocator(groups, own, step, max_unit_ratio)
            if own
            else Allocator(groups, scores, ranking, step, max_unit_ratio)
        )

    if own and ratio is None and macs_reduction is None:
        kept, notes = own_budget(groups, own, max_unit_ratio)
        return removed_fraction(groups, kept), kept, 1, notes
    if macs_reduction is None:
        allocator = allocator_for(round_to)
        if own:  # the scale whose removed fraction of units is closest to the ratio
            knob = min((i / 400 for i in range(401)), key=lambda k: abs(removed_fraction(groups, allocator.kept(k)) - ratio))
            return knob, allocator.kept(knob), round_to, notes
        return ratio, allocator.kept(ratio), round_to, notes
    step = round_to
    while True:
        allocator = allocator_for(step)
        knob, kept, reached = search(allocator, estimator, macs_reduction)
        if abs(reached / macs_reduction - 1.0) <= TOLERANCE:
            if step != round_to:
                notes.append(
                    f"channel rounding {round_to} cannot reach {macs_reduction}x MACs on this model; rounded to {step} instead"
                )
            return knob, kept, step, notes
        if not round_to_is_default or step == 1:
            raise ConfigError(
                f"--macs-reduction {macs_reduction} is out of reach: the closest is {reached:.2f}x "
                f"(rounding to {step} channels, at most {max_unit_ratio:.0%} of any group removed)"
            )
        step = max(1, step // 2)


def lowest(scores: torch.Tensor, kept: int) -> list[int]:
    """Indices of the units to remove: all but the `kept` highest scores (ties: lower index kept)."""
    size = scores.numel()
    if kept >= size:
        return []
    order = sorted(range(size), key=lambda u: (float(scores[u]), -u))
    return sorted(order[: size - kept])

"""How many units each group keeps: a uniform ratio per group, or the ratio whose MACs reduction
hits a target; widths rounded to the runtime's channel block so the runtime does not pad them back."""

from __future__ import annotations

import math

import torch

from pipeline.core.errors import ConfigError
from pipeline.surgery import UnitGroup

TOLERANCE = 0.05  # --macs-reduction is met within 5%


def kept_count(size: int, ratio: float, round_to: int, max_unit_ratio: float, kind: str = "channel") -> int:
    step = 1 if kind == "head" else round_to
    if size <= step or ratio <= 0.0:
        return size  # too narrow to round: kept whole
    floor = math.ceil(size * (1.0 - max_unit_ratio) / step) * step
    kept = round(size * (1.0 - ratio) / step) * step
    return int(min(size, max(kept, step, floor)))


def kept_counts(groups: list[UnitGroup], ratio: float, round_to: int, max_unit_ratio: float) -> dict[str, int]:
    return {g.name: kept_count(g.size, ratio, round_to, max_unit_ratio, g.kind) for g in groups}


def search_ratio(groups: list[UnitGroup], estimator, target: float, round_to: int, max_unit_ratio: float,
                 steps: int = 400) -> tuple[float, dict[str, int], float]:
    """The uniform ratio whose MACs reduction is closest to `target`: (ratio, kept counts, reached)."""
    best = (0.0, kept_counts(groups, 0.0, round_to, max_unit_ratio), 1.0)
    for i in range(steps + 1):
        ratio = max_unit_ratio * i / steps
        kept = kept_counts(groups, ratio, round_to, max_unit_ratio)
        reached = estimator.dense / max(estimator.estimate(kept), 1)
        if abs(reached - target) < abs(best[2] - target):
            best = (ratio, kept, reached)
    return best


def plan_budget(groups, estimator, cfg_ratio: float | None, macs_reduction: float | None, round_to: int,
                round_to_is_default: bool, max_unit_ratio: float) -> tuple[float, dict[str, int], int, list[str]]:
    """(ratio, kept counts, round_to used, notes). With a MACs target a default rounding is relaxed
    (halved) when it makes the target unreachable; an explicit --round-to never is."""
    notes: list[str] = []
    if macs_reduction is None:
        return cfg_ratio, kept_counts(groups, cfg_ratio, round_to, max_unit_ratio), round_to, notes
    step = round_to
    while True:
        ratio, kept, reached = search_ratio(groups, estimator, macs_reduction, step, max_unit_ratio)
        if abs(reached / macs_reduction - 1.0) <= TOLERANCE:
            if step != round_to:
                notes.append(f"channel rounding {round_to} cannot reach {macs_reduction}x MACs on this model; rounded to {step} instead")
            return ratio, kept, step, notes
        if not round_to_is_default or step == 1:
            raise ConfigError(
                f"--macs-reduction {macs_reduction} is out of reach: the closest is {reached:.2f}x "
                f"(rounding to {step} channels, at most {max_unit_ratio:.0%} of any group removed)")
        step = max(1, step // 2)


def lowest(scores: torch.Tensor, kept: int) -> list[int]:
    """Indices of the units to remove: all but the `kept` highest scores (ties: lower index kept)."""
    size = scores.numel()
    if kept >= size:
        return []
    order = sorted(range(size), key=lambda u: (float(scores[u]), -u))
    return sorted(order[: size - kept])

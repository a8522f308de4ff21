"""--macs-reduction: the knob whose estimated MACs reduction is closest to the target, met within 5%.
A default rounding is relaxed (halved) when it makes the target unreachable; an explicit --round-to
never is."""

from __future__ import annotations

from pipeline.allocators.base import Allocation, Request, spread_for
from pipeline.core.errors import ConfigError

TOLERANCE = 0.05
STEPS = 400


def search(spread, estimator, target: float, steps: int = STEPS) -> tuple[float, dict[str, int], float]:
    """(knob, kept counts, reached reduction) closest to `target`."""
    best = (0.0, spread.kept(0.0), 1.0)
    top = spread.max_unit_ratio if spread.ranking == "uniform" else 1.0
    for i in range(1, steps + 1):
        knob = top * i / steps
        kept = spread.kept(knob)
        reached = estimator.dense / max(estimator.estimate(kept), 1)
        if abs(reached - target) < abs(best[2] - target):
            best = (knob, kept, reached)
    return best


def allocate(request: Request) -> Allocation:
    target, step = request.macs_reduction, request.round_to
    while True:
        knob, kept, reached = search(spread_for(request, step), request.estimator, target)
        if abs(reached / target - 1.0) <= TOLERANCE:
            notes = []
            if step != request.round_to:
                notes.append(
                    f"channel rounding {request.round_to} cannot reach {target}x MACs on this model; rounded to {step} instead"
                )
            return Allocation(kept, knob, step, notes)
        if not request.round_to_is_default or step == 1:
            raise ConfigError(
                f"--macs-reduction {target} is out of reach: the closest is {reached:.2f}x "
                f"(rounding to {step} channels, at most {request.max_unit_ratio:.0%} of any group removed)"
            )
        step = max(1, step // 2)

"""What a plan is worth, for the knapsack planner (pipeline.allocators.knapsack.plan): the worth of a whole
plan, and of each of one group's widths with the other groups held (linearised around a plan, as the
costs are: pipeline.allocators.costs, pipeline.latency.predict).

Additive: every group's width has a value of its own (minus its measured sensitivity; raw scores under
the global ranking). CarriedMacs: the MACs the kept units carry, each unit's part in them weighted by its
score: every layer's MACs times the score share of the outputs it keeps times that of its inputs. A
channel of a residual stream, read by every block along it, carries more MACs than one inside a block;
a layer cut on both sides loses less than its two cuts apart would (as its MACs and its time do), which a
value summed per group misses, and such a sum steers a latency knapsack to cut few groups far."""

from __future__ import annotations

import torch

from pipeline.pruning.macs import touching


class Additive:
    def __init__(self, values: dict[str, dict[int, float]]):
        """`values`: {group: {width: value}}."""
        self.values = values

    def total(self, kept: dict[str, int]) -> float:
        return sum(self.values[name][width] for name, width in kept.items() if name in self.values)

    def group_values(self, name: str, widths: list[int], around: dict[str, int]) -> list[float]:
        return [self.values[name][w] for w in widths]


class CarriedMacs:
    def __init__(self, estimator, scores: dict[str, torch.Tensor]):
        """`estimator`: pipeline.pruning.macs.MacsEstimator (each layer's MACs and the groups setting its widths)."""
        self.estimator = estimator
        self.shares = {name: _kept_shares(s) for name, s in scores.items()}
        self.touching = touching(estimator.layers)

    def total(self, kept: dict[str, int]) -> float:
        return self.estimator.carried(self._shares(kept))

    def group_values(self, name: str, widths: list[int], around: dict[str, int]) -> list[float]:
        shares, layers = self._shares(around), self.touching.get(name, [])
        return [self.estimator.carried({**shares, name: self.shares[name][w]}, layers) for w in widths]

    def _shares(self, kept: dict[str, int]) -> dict[str, float]:
        return {group: self.shares[group][width] for group, width in kept.items() if group in self.shares}


def _kept_shares(scores: torch.Tensor) -> list[float]:
    """[k]: the share of the group's score its k best units hold (the same for every unit where no score is
    positive; a negative score counts as none)."""
    scores = scores.detach().double().flatten().clamp_min(0.0)
    if float(scores.sum()) <= 0.0:
        scores = torch.ones_like(scores)
    ordered = scores.sort(descending=True).values.cumsum(0) / scores.sum()
    return [0.0, *ordered.tolist()]

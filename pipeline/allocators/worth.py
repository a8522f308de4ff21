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
        self.macs, self.layers, self.sizes = estimator.macs, estimator.layers, estimator.sizes
        self.shares = {name: _kept_shares(s) for name, s in scores.items()}
        self.touching: dict[str, list[str]] = {}
        for layer, groups in self.layers.items():
            for group in {groups.out_group, *(g for g, _ in groups.in_groups)} - {None}:
                self.touching.setdefault(group, []).append(layer)

    def total(self, kept: dict[str, int]) -> float:
        return sum(self._carried(layer, kept) for layer in self.macs)

    def group_values(self, name: str, widths: list[int], around: dict[str, int]) -> list[float]:
        layers = self.touching.get(name, [])
        return [sum(self._carried(layer, {**around, name: w}) for layer in layers) for w in widths]

    def _share(self, group: str, kept: dict[str, int]) -> float:
        shares = self.shares.get(group)
        return 1.0 if shares is None or group not in kept else shares[kept[group]]

    def _carried(self, layer: str, kept: dict[str, int]) -> float:
        groups = self.layers[layer]
        outputs = self._share(groups.out_group, kept) if groups.out_group else 1.0
        lost = sum(self.sizes[g] * per_unit * (1.0 - self._share(g, kept)) for g, per_unit in groups.in_groups)
        return self.macs[layer] * outputs * max(0.0, 1.0 - lost / max(groups.in_total, 1))


def _kept_shares(scores: torch.Tensor) -> list[float]:
    """[k]: the share of the group's score its k best units hold (the same for every unit where no score is
    positive; a negative score counts as none)."""
    scores = scores.detach().double().flatten().clamp_min(0.0)
    if float(scores.sum()) <= 0.0:
        scores = torch.ones_like(scores)
    ordered = scores.sort(descending=True).values.cumsum(0) / scores.sum()
    return [0.0, *ordered.tolist()]

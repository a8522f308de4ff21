"""What a plan costs, for the knapsack planner (pipeline.allocators.knapsack.plan): MACs from the model's
MACs estimator, or the count of kept units. Each predicts a whole plan, and what each of one group's widths adds to a
plan with the others held; the latency model (pipeline.latency.predict) answers the same two questions in milliseconds."""

from __future__ import annotations


class MacsCost:
    def __init__(self, estimator):
        self.estimator = estimator
        self.dense = estimator.dense

    def predict(self, kept: dict[str, int]) -> float:
        return float(self.estimator.estimate(kept))

    def group_costs(self, name: str, widths: list[int], kept: dict[str, int]) -> list[float]:
        now = self.predict(kept)
        return [self.predict({**kept, name: w}) - now for w in widths]


class UnitsCost:
    def __init__(self, groups):
        self.sizes = {g.name: g.size for g in groups}
        self.dense = float(sum(self.sizes.values()))

    def predict(self, kept: dict[str, int]) -> float:
        return float(sum(kept.get(name, size) for name, size in self.sizes.items()))

    def group_costs(self, name: str, widths: list[int], kept: dict[str, int]) -> list[float]:
        return [float(w - kept.get(name, self.sizes[name])) for w in widths]

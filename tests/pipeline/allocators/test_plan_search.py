"""The whole-plan search on a constructed cost and a constructed whole-plan divergence in which two
groups' cuts interact: what per-group values cannot see and measuring plans whole does."""

import pytest

from pipeline.allocators import plan_search
from pipeline.allocators.knapsack import fastest, plan
from pipeline.allocators.worth import Additive
from pipeline.pruning.surgery import UnitGroup

SIZES = {"a": 32, "b": 32, "c": 32}
WIDTHS = {name: [8, 16, 24, 32] for name in SIZES}
GROUPS = [UnitGroup(name, "channel", size, [name], []) for name, size in SIZES.items()]


class Cost:
    """1 ms fixed plus 0.1 ms per kept unit of any group."""

    dense = 1.0 + 0.1 * sum(SIZES.values())

    def predict(self, kept):
        return 1.0 + 0.1 * sum(kept.values())

    def group_costs(self, name, widths, kept):
        return [0.1 * (w - kept[name]) for w in widths]


LOSS = {  # each group's divergence cut alone, per width: b's first block is the cheapest, c's the next
    "a": {32: 0.0, 24: 0.04, 16: 0.08, 8: 0.12},
    "b": {32: 0.0, 24: 0.01, 16: 0.06, 8: 0.11},
    "c": {32: 0.0, 24: 0.02, 16: 0.04, 8: 0.06},
}
VALUES = Additive({name: {w: -loss for w, loss in curve.items()} for name, curve in LOSS.items()})


class Divergence:
    """The groups' losses alone add up, but b and c cut together cost far more than their sum. Records
    the plans it is asked for."""

    def __init__(self):
        self.calls = []

    def __call__(self, kept):
        self.calls.append(dict(kept))
        return sum(LOSS[n][w] for n, w in kept.items()) + (1.0 if kept["b"] < 32 and kept["c"] < 32 else 0.0)


def test_the_uniform_start_is_the_uniform_plan_nearest_short_of_the_limit():
    cost = Cost()
    start = plan_search.uniform_start(GROUPS, WIDTHS, cost, cost.predict(dict.fromkeys(SIZES, 20)), 8, 0.9)
    assert start == dict.fromkeys(SIZES, 24)  # 3 x 24 units is above the limit, 3 x 16 within it
    assert plan_search.uniform_start(GROUPS, WIDTHS, cost, cost.dense, 8, 0.9) == dict.fromkeys(SIZES, 32)


def test_a_start_respects_each_groups_allowed_widths():
    widths = {**WIDTHS, "a": [8, 16]}  # a criterion's own count bounds group a at 16
    start = plan_search.uniform_start(GROUPS, widths, Cost(), 7.0, 8, 0.9)
    assert start == {"a": 16, "b": 24, "c": 24}  # uniform 24 (7.4 ms, 16 would be 5.8) with a held to its bound


def test_measured_whole_the_search_avoids_cuts_that_interact():
    cost, divergence = Cost(), Divergence()
    limit = cost.predict({"a": 32, "b": 32, "c": 32}) - 1.6  # 16 units to go: two blocks
    by_values = plan(cost, WIDTHS, VALUES, limit, fastest(cost, WIDTHS))
    assert by_values == {"a": 32, "b": 24, "c": 24}  # the losses' sum cuts the two cheapest first blocks together
    kept = plan_search.descend(dict.fromkeys(SIZES, 32), WIDTHS, cost, limit, divergence, VALUES)
    assert cost.predict(kept) <= limit + 1e-9
    assert kept == {"a": 24, "b": 24, "c": 32}  # b first; then c would cost 1.02 more, a 0.04, b again 0.05
    assert divergence(kept) == pytest.approx(0.05) and divergence(by_values) == pytest.approx(1.03)


def test_each_step_measures_only_the_candidates_the_values_rank_cheapest(monkeypatch):
    monkeypatch.setattr(plan_search, "CANDIDATES", 1)
    cost, divergence = Cost(), Divergence()
    kept = plan_search.descend(dict.fromkeys(SIZES, 32), WIDTHS, cost, cost.dense - 0.8, divergence, VALUES)
    assert kept == {"a": 32, "b": 24, "c": 32}
    # the start, b's step (the one candidate), and b's step again once taken
    assert divergence.calls == [dict.fromkeys(SIZES, 32), kept, kept]


def test_a_limit_out_of_reach_ends_at_the_narrowest_widths():
    cost = Cost()
    kept = plan_search.descend(dict.fromkeys(SIZES, 32), WIDTHS, cost, 0.0, Divergence(), VALUES)
    assert kept == dict.fromkeys(SIZES, 8)
    assert cost.predict(kept) == pytest.approx(1.0 + 0.1 * 24)

"""The latency allocator against a constructed latency model (known per-group costs) and a constructed
measurement that the tables mispredict: the allocator's own logic, not a runtime."""

import pytest
import torch

from pipeline.allocators import ALLOCATORS
from pipeline.allocators import latency as allocator
from pipeline.allocators.base import Request, width_options
from pipeline.allocators.knapsack import fastest, plan
from pipeline.allocators.worth import Additive
from pipeline.pruning.surgery import UnitGroup

SIZES = {"a": 64, "b": 64, "c": 32}
MS_PER_UNIT = {"a": 0.10, "b": 0.02, "c": 0.05}  # group a is the expensive one per unit


class Model:
    """Latency additive over groups: a fixed part plus a cost per kept unit."""

    dense_ms = 2.0 + sum(SIZES[g] * MS_PER_UNIT[g] for g in SIZES)

    def predict(self, kept):
        return 2.0 + sum(kept.get(g, SIZES[g]) * MS_PER_UNIT[g] for g in SIZES)

    def group_costs(self, group, widths, around):
        return [(w - around.get(group, SIZES[group])) * MS_PER_UNIT[group] for w in widths]


class Budget:
    """The target saves only 70% of what the table predicts (a fixed cost the table does not see)."""

    def __init__(self, speedup):
        self.model, self.speedup, self.calls = Model(), speedup, []

    class setting:
        target = "constructed"

    def measure(self, kept):
        self.calls.append(dict(kept))
        saved = self.model.dense_ms - self.model.predict(kept)
        return self.model.dense_ms, self.model.dense_ms - 0.7 * saved


def _request(budget, own=None, scores=None):
    groups = [UnitGroup(name, "channel", size, [name], []) for name, size in SIZES.items()]
    scores = scores or {name: torch.linspace(1.0, 2.0, size) for name, size in SIZES.items()}
    return Request(groups, scores, None, 8, True, 0.9, "uniform", own=own, latency=budget)


def test_measured_rounds_correct_a_table_that_overpromises():
    budget = Budget(speedup=1.8)
    allocation = ALLOCATORS.load("latency")(_request(budget))
    rounds = allocation.details["rounds"]
    assert 1.8 <= rounds[0]["predicted_speedup"] < 1.8 * 1.05  # the table taken at its word first (8-channel steps)
    assert rounds[0]["measured_speedup"] < 1.8 * 0.95  # which the target does not keep
    chosen = next(r for r in rounds if r["chosen"])
    assert chosen["measured_speedup"] == pytest.approx(1.8, rel=allocator.TOLERANCE)
    assert len(rounds) <= allocator.ROUNDS and chosen is rounds[-1]
    assert all(w % 8 == 0 and w >= 8 for w in allocation.kept.values())
    assert allocation.kept["a"] < SIZES["a"] // 2  # the expensive group pays most
    assert any("latency round 1: predicted" in note for note in allocation.notes)


def test_the_criterions_own_counts_bound_the_widths():
    budget = Budget(speedup=1.3)
    allocation = ALLOCATORS.load("latency")(_request(budget, own={"a": 40, "b": 20, "c": 30}))
    assert allocation.kept["a"] <= 40 and allocation.kept["b"] <= 24 and allocation.kept["c"] <= 32


def test_a_goal_out_of_reach_keeps_the_closest_and_says_so():
    allocation = ALLOCATORS.load("latency")(_request(Budget(speedup=50.0)))
    assert any("not met within 5%" in note for note in allocation.notes)
    assert allocation.kept == {"a": 8, "b": 8, "c": 8}  # every group at its fewest


def test_the_knapsack_keeps_the_highest_scores_per_millisecond():
    # group c's units are all worthless but for one: it should be cut first, at equal cost per unit
    scores = {"a": torch.ones(64), "b": torch.ones(64), "c": torch.cat([torch.full((31,), 1e-3), torch.ones(1)])}
    widths = {g.name: width_options(g, _request(None)) for g in _request(None).groups}
    values = Additive({name: allocator.kept_values(scores[name], "global") for name in widths})
    model = Model()
    kept = plan(model, widths, values, model.dense_ms - 24 * 0.05, fastest(model, widths))
    assert kept["c"] == 8 and kept["a"] == 64 and kept["b"] == 64


def test_next_ask_interpolates_between_the_bracketing_rounds():
    tried = [(0.0, 0.0), (0.5, 0.3), (0.9, 0.7)]
    assert allocator.next_ask(tried, 0.5, 0.98) == pytest.approx(0.7)
    assert allocator.next_ask([(0.0, 0.0), (0.4, 0.2)], 0.5, 0.98) == pytest.approx(0.98)  # through the origin, capped
    assert allocator.next_ask([(0.0, 0.0), (0.4, 0.2)], 0.3, 0.98) == pytest.approx(0.6)


def test_an_ask_that_lands_on_a_measured_plan_moves_towards_the_goals_other_side():
    # three plans on the widths' steps: asks up to 0.5 give the slow one, then one between, then the fast one
    def plan_at(ask):
        return {"a": 48} if ask <= 0.5 else {"a": 40} if ask <= 0.56 else {"a": 32}

    slow, fast = {"a": 48}, {"a": 32}
    tried = [(0.0, 0.0), (0.45, 0.40), (0.60, 0.56)]  # (predicted, measured) savings: dense, slow, fast
    between = allocator.unmeasured(plan_at, 0.48, [slow, fast], tried, wanted=0.5, most=0.9)
    assert between == {"a": 40}  # 0.48 -> 0.54, halfway to the fast plan's predicted saving
    assert allocator.unmeasured(plan_at, 0.48, [slow, fast, {"a": 40}], tried + [(0.52, 0.47)], 0.5, 0.9) is None
    assert allocator.unmeasured(plan_at, 0.3, [fast], [(0.0, 0.0), (0.60, 0.56)], 0.5, 0.9) == slow  # not measured yet


class Spread:
    """A whole plan's constructed divergence: how far its groups' kept fractions are apart (a plan that
    cuts every group alike costs nothing). Each plan counted once, as PlanDivergence measures."""

    def __init__(self):
        self.known = {}

    @property
    def measured(self):
        return len(self.known)

    def __call__(self, kept):
        fractions = [kept[n] / SIZES[n] for n in SIZES]
        return self.known.setdefault(tuple(sorted(kept.items())), max(fractions) - min(fractions))


def test_with_plans_measured_whole_each_round_takes_the_least_divergent_plan():
    by_scores = ALLOCATORS.load("latency")(_request(Budget(speedup=1.5)))
    request = _request(Budget(speedup=1.5))
    request.divergence = Spread()
    searched = ALLOCATORS.load("latency")(request)
    assert request.divergence(searched.kept) < request.divergence(by_scores.kept)
    assert request.divergence(searched.kept) <= 8 / 32  # one block of the narrowest group apart at most
    chosen = next(r for r in searched.details["rounds"] if r["chosen"])
    assert chosen["measured_speedup"] == pytest.approx(1.5, rel=allocator.TOLERANCE)
    assert searched.details["plans_measured_whole"] == request.divergence.measured > len(searched.details["rounds"])
    assert any("plans measured whole" in note for note in searched.notes)

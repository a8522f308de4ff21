"""The latency allocator against a constructed latency model (known per-group costs) and a constructed
measurement that the tables mispredict: the allocator's own logic, not a runtime."""

import pytest
import torch

from pipeline.allocators import ALLOCATORS
from pipeline.allocators import latency as allocator
from pipeline.allocators.base import Request, width_options
from pipeline.allocators.knapsack import fastest, plan
from pipeline.allocators.worth import Additive, CarriedMacs
from pipeline.models.build import build_model
from pipeline.pruning import macs
from pipeline.pruning.analysis import analyse
from pipeline.pruning.surgery import UnitGroup
from tests.tiny_models import TINY_SPECS

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
    cuts every group alike costs nothing). Each plan counted once, as PlanLoss measures."""

    what = "the kept fractions' spread"

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
    request.plan_loss = Spread()
    searched = ALLOCATORS.load("latency")(request)
    assert request.plan_loss(searched.kept) < request.plan_loss(by_scores.kept)
    assert request.plan_loss(searched.kept) <= 8 / 32  # one block of the narrowest group apart at most
    chosen = next(r for r in searched.details["rounds"] if r["chosen"])
    assert chosen["measured_speedup"] == pytest.approx(1.5, rel=allocator.TOLERANCE)
    assert searched.details["plans_measured_whole"] == request.plan_loss.measured > len(searched.details["rounds"])
    assert any("plans measured whole" in note for note in searched.notes)


def test_with_plans_measured_whole_the_uniform_plans_either_side_of_the_goal_are_measured_too():
    request = _request(Budget(speedup=1.8))
    request.plan_loss = Spread()
    allocation = ALLOCATORS.load("latency")(request)
    rounds = allocation.details["rounds"]
    uniform = [r for r in rounds if r.get("plan") == "uniform"]
    assert any(r["measured_speedup"] < 1.8 for r in uniform) and any(r["measured_speedup"] >= 1.8 for r in uniform)
    near = [r for r in rounds if r["measured_speedup"] == pytest.approx(1.8, rel=allocator.TOLERANCE)]
    chosen = next(r for r in rounds if r["chosen"])
    # searched rounds met the goal too, but a uniform plan (every group cut alike here) diverges least
    assert len(near) > 1 and chosen in uniform and chosen["loss"] < min(r["loss"] for r in near if r is not chosen)
    assert request.plan_loss(allocation.kept) == chosen["loss"]
    assert any("(uniform plan)" in note for note in allocation.notes)


def test_without_uniform_plans_measured_the_least_divergent_round_within_tolerance_is_kept():
    rounds = [{"kept": {"a": n}, "measured_speedup": s} for n, s in ((1, 1.24), (2, 1.20), (3, 1.10), (4, 1.32))]
    divergence = {1: 0.3, 2: 0.1, 3: 0.0, 4: 0.05}
    assert allocator.chosen(rounds, 1.25, lambda kept: divergence[kept["a"]])[0] is rounds[1]  # 1.10x, 1.32x miss by >5%
    assert allocator.chosen(rounds, 1.25, None)[0] is rounds[0]  # without plans measured whole: the closest
    assert allocator.chosen(rounds[2:3], 1.25, lambda kept: 0.0)[0] is rounds[2]  # none within: the closest there is


def _rounds(*measured):
    """(name, measured speedup, plan kind) -> rounds whose kept widths name them."""
    return [{"kept": {"name": name}, "measured_speedup": speedup, "plan": kind} for name, speedup, kind in measured]


def test_the_round_kept_beats_the_uniform_plans_line_by_most_at_its_own_speed():
    rounds = _rounds(("u1", 1.21, "uniform"), ("u2", 1.30, "uniform"), ("fast", 1.25, None), ("slow", 1.22, None))
    # the uniform line rises 4 per 1x of speedup: "fast" sits 0.06 below it, "slow" only 0.02, though less divergent
    divergence = {"u1": 0.60, "u2": 0.96, "fast": 0.70, "slow": 0.62}
    best, why = allocator.chosen(rounds, 1.25, lambda kept: divergence[kept["name"]])
    assert best is rounds[2] and "below the uniform plans' line" in why and "+0.0600" in why
    divergence["fast"], divergence["slow"] = 0.80, 0.70  # both above the line: the uniform plan nearest the goal
    assert allocator.chosen(rounds, 1.25, lambda kept: divergence[kept["name"]])[0] is rounds[0]


def test_the_criterions_scores_are_worth_the_macs_they_carry_unless_ranked_globally():
    torch.manual_seed(0)
    model, example = build_model(TINY_SPECS["resnet"]).eval(), torch.randn(1, 3, 32, 32)
    groups = analyse(model, example).groups
    request = Request(groups, {g.name: torch.rand(g.size) for g in groups}, macs.MacsEstimator(model, example, groups), 2,
                      False, 0.9, "uniform")  # fmt: skip
    widths = {g.name: width_options(g, request) for g in groups}
    assert isinstance(allocator.score_worth(request, widths), CarriedMacs)
    request.ranking = "global"  # raw scores compared across groups: their sums
    assert isinstance(allocator.score_worth(request, widths), Additive)


def test_a_uniform_plan_a_round_measured_already_is_marked_not_measured_again():
    budget = Budget(speedup=1.4)
    request = _request(budget)
    request.plan_loss = Spread()
    rounds = ALLOCATORS.load("latency")(request).details["rounds"]
    assert len(budget.calls) == len(rounds) == len({tuple(sorted(c.items())) for c in budget.calls})  # each plan timed once
    assert [r["round"] for r in rounds if r.get("plan") == "uniform"] == [2, 3]  # round 2, from the loop, was one already
    assert rounds[1]["loss"] == 0.0 and rounds[1]["chosen"]  # every group cut alike, within 5%: kept

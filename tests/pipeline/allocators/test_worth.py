"""What a plan is worth, on tiny models built in code: the MACs the kept units carry, score-weighted."""

import pytest
import torch

from pipeline.allocators.base import kept_counts
from pipeline.allocators.worth import Additive, CarriedMacs
from pipeline.models.build import build_model
from pipeline.pruning import macs
from pipeline.pruning.analysis import analyse
from tests.tiny_models import TINY_SPECS


def _setup(kind: str):
    torch.manual_seed(0)
    model = build_model(TINY_SPECS[kind]).eval()
    example = torch.randn(1, 3, 32, 32)
    groups = analyse(model, example).groups
    return groups, macs.MacsEstimator(model, example, groups)


@pytest.mark.parametrize("kind", sorted(TINY_SPECS))
def test_under_equal_scores_a_plan_is_worth_the_macs_it_keeps(kind):
    groups, estimator = _setup(kind)
    worth = CarriedMacs(estimator, {g.name: torch.ones(g.size) for g in groups})
    for ratio in (0.0, 0.3, 0.6):
        kept = kept_counts(groups, ratio, 2, 0.9)
        assert worth.total(kept) == pytest.approx(estimator.estimate(kept), rel=1e-9)


def test_the_units_kept_carry_their_scores_share():
    groups, estimator = _setup("resnet")
    group = max(groups, key=lambda g: estimator.dense - estimator.estimate({g.name: g.size // 2}))
    scores = {g.name: torch.ones(g.size) for g in groups}
    scores[group.name] = torch.cat([torch.full((group.size // 2,), 3.0), torch.ones(group.size - group.size // 2)])
    worth = CarriedMacs(estimator, scores)
    dense = {g.name: g.size for g in groups}
    half = {**dense, group.name: group.size // 2}
    # the half that holds 3/4 of the score keeps 3/4 of what depends on the group, not 1/2
    lost_by_macs = estimator.dense - estimator.estimate(half)
    assert worth.total(dense) - worth.total(half) == pytest.approx(lost_by_macs / 2, rel=1e-9)


def test_a_layer_cut_on_both_sides_loses_less_than_its_two_cuts_apart():
    groups, estimator = _setup("resnet")
    worth = CarriedMacs(estimator, {g.name: torch.rand(g.size) + 0.5 for g in groups})
    dense = {g.name: g.size for g in groups}
    # two groups that meet in one layer: one sets its outputs, the other its inputs
    layer = next(lg for lg in estimator.layers.values() if lg.out_group and any(g != lg.out_group for g, _ in lg.in_groups))
    first, second = layer.out_group, next(g for g, _ in layer.in_groups if g != layer.out_group)
    one = {**dense, first: dense[first] // 2}
    other = {**dense, second: dense[second] // 2}
    both = {**one, second: dense[second] // 2}
    apart = (worth.total(dense) - worth.total(one)) + (worth.total(dense) - worth.total(other))
    assert worth.total(dense) - worth.total(both) < apart
    # linearised around a plan, one group's options are what the whole plan is worth, up to a constant
    options = [dense[first] // 2, dense[first]]
    values = worth.group_values(first, options, other)
    assert values[1] - values[0] == pytest.approx(worth.total(other) - worth.total(both), rel=1e-9)


def test_additive_values_add_up_over_the_groups():
    worth = Additive({"a": {8: 1.0, 16: 3.0}, "b": {8: 2.0, 16: 2.5}})
    assert worth.total({"a": 8, "b": 16}) == 3.5
    assert worth.group_values("a", [8, 16], {"a": 16, "b": 8}) == [1.0, 3.0]

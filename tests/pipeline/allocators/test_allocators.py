import pytest
import torch

from pipeline.allocators import ALLOCATORS, base
from pipeline.allocators import macs as macs_allocator
from pipeline.allocators.base import Request
from pipeline.core.errors import ConfigError
from pipeline.models.build import build_model
from pipeline.pruning import macs
from pipeline.pruning.analysis import analyse
from tests.tiny_models import TINY_SPECS


@pytest.mark.parametrize(
    "size, ratio, round_to, expected",
    [
        (64, 0.5, 8, 32),
        (64, 0.3, 16, 48),
        (48, 0.5, 16, 32),
        (16, 0.5, 16, 16),
        (64, 0.99, 8, 8),
        (100, 0.0, 16, 100),
        (24, 0.5, 1, 12),
    ],
)
def test_kept_count_rounds_to_the_block(size, ratio, round_to, expected):
    assert base.kept_count(size, ratio, round_to, max_unit_ratio=0.9) == expected


def test_heads_are_counted_not_rounded():
    assert base.kept_count(12, 0.5, 16, 0.9, kind="head") == 6


def test_max_unit_ratio_keeps_a_floor():
    assert base.kept_count(64, 0.99, 1, max_unit_ratio=0.75) == 16


def test_lowest_removes_the_smallest_scores():
    assert base.lowest(torch.tensor([0.5, 0.1, 0.9, 0.3]), kept=2) == [1, 3]
    assert base.lowest(torch.tensor([1.0, 2.0]), kept=2) == []


def _allocate(groups, scores, estimator, ratio, macs_reduction, round_to, round_to_is_default, max_unit_ratio, own=None):
    """What the prune stage asks: the budget mode preflight resolves, answered by its registered allocator."""
    mode = ("own-scaled" if ratio or macs_reduction else "own") if own else ("macs" if macs_reduction else "ratio")
    request = Request(groups, scores, estimator, round_to, round_to_is_default, max_unit_ratio, ratio=ratio,
                      macs_reduction=macs_reduction, own=own)  # fmt: skip
    allocation = ALLOCATORS.load(mode)(request)
    return allocation.knob, allocation.kept, allocation.round_to, allocation.notes


def _uniform_scores(groups):
    return {g.name: torch.arange(g.size, dtype=torch.float64) for g in groups}


def test_global_ranking_prunes_the_low_scoring_group_more():
    from pipeline.pruning.surgery import UnitGroup

    groups = [UnitGroup("a", "channel", 16, ["a"]), UnitGroup("b", "channel", 16, ["b"])]
    scores = {"a": torch.linspace(10, 20, 16, dtype=torch.float64), "b": torch.linspace(0, 12, 16, dtype=torch.float64)}
    kept = base.RankedSpread(groups, scores, "global", 1, 0.9).kept(0.5)
    assert kept["a"] > kept["b"] and kept["a"] + kept["b"] == 16
    uniform = base.RankedSpread(groups, scores, "uniform", 1, 0.9).kept(0.5)
    assert uniform == {"a": 8, "b": 8}


def test_unscored_groups_are_kept_whole():
    from pipeline.pruning.surgery import UnitGroup

    groups = [UnitGroup("a", "channel", 16, ["a"]), UnitGroup("heads", "head", 4, ["q"])]
    kept = base.RankedSpread(groups, {"a": torch.arange(16.0)}, "global", 1, 0.9).kept(0.5)
    assert kept == {"a": 8}


def _setup():
    model = build_model("cifar:resnet20").eval()
    example = torch.randn(1, 3, 32, 32)
    groups = analyse(model, example).groups
    return groups, macs.MacsEstimator(model, example, groups)


def test_macs_target_is_met_within_five_percent():
    groups, estimator = _setup()
    ratio, kept, round_to, notes = _allocate(groups, _uniform_scores(groups), estimator, None, 1.6, 8, True, 0.9)
    reached = estimator.dense / estimator.estimate(kept)
    assert abs(reached / 1.6 - 1) <= 0.05 and 0 < ratio < 0.9 and round_to == 8 and notes == []


def test_default_rounding_is_relaxed_when_the_target_needs_it():
    groups, estimator = _setup()
    _, _, round_to, notes = _allocate(groups, _uniform_scores(groups), estimator, None, 1.8, 16, True, 0.9)
    assert round_to < 16 and "rounded to" in notes[0]


def test_explicit_rounding_that_cannot_reach_the_target_is_an_error():
    groups, estimator = _setup()
    with pytest.raises(ConfigError, match="out of reach"):
        _allocate(groups, _uniform_scores(groups), estimator, None, 1.8, 16, False, 0.9)


def _own_budget_setup():
    model = build_model(TINY_SPECS["resnet"]).eval()
    example = torch.randn(1, 3, 32, 32)
    groups = analyse(model, example).groups
    own = {g.name: max(1, g.size // (2 + i % 3)) for i, g in enumerate(groups)}  # uneven per-layer choices
    return groups, _uniform_scores(groups), macs.MacsEstimator(model, example, groups), own


def test_a_criterions_own_counts_are_used_as_they_are_without_a_budget_flag():
    groups, scores, estimator, own = _own_budget_setup()
    knob, kept, round_to, notes = _allocate(groups, scores, estimator, None, None, 16, True, 0.9, own=own)
    assert kept == own and round_to == 1 and not notes
    assert knob == pytest.approx(1 - sum(own.values()) / sum(g.size for g in groups))


def test_own_counts_are_kept_within_what_removal_allows():
    groups, scores, estimator, own = _own_budget_setup()
    first = groups[0].name
    own[first] = 0
    _, kept, _, notes = _allocate(groups, scores, estimator, None, None, 16, True, 0.5, own=own)
    assert kept[first] == -(-groups[0].size // 2) and first in notes[0]


def test_own_counts_are_scaled_to_a_macs_target():
    groups, scores, estimator, own = _own_budget_setup()
    _, kept, step, _ = _allocate(groups, scores, estimator, None, 2.0, 1, False, 0.9, own=own)
    assert estimator.dense / estimator.estimate(kept) == pytest.approx(2.0, rel=macs_allocator.TOLERANCE)
    # one factor for every layer: the kept counts follow the criterion's, up to rounding and clamping
    factors = [kept[g.name] / own[g.name] for g in groups if 1 < kept[g.name] < g.size and g.size > 8]
    assert max(factors) / min(factors) < 1.5


def test_own_counts_are_scaled_to_a_ratio():
    groups, scores, estimator, own = _own_budget_setup()
    _, kept, _, _ = _allocate(groups, scores, estimator, 0.3, None, 1, False, 0.9, own=own)
    assert base.removed_fraction(groups, kept) == pytest.approx(0.3, abs=0.03)


def test_scaled_allocator_keeps_everything_at_zero_and_shrinks_monotonically():
    groups, _, _, own = _own_budget_setup()
    allocator = base.ScaledSpread(groups, own, 1, 0.9)
    assert allocator.kept(0.0) == {g.name: g.size for g in groups}
    totals = [sum(allocator.kept(k / 20).values()) for k in range(21)]
    assert totals == sorted(totals, reverse=True) and totals[-1] < totals[0]

"""The sensitivity allocator on constructed curves, against the brute-force optimum."""

import itertools

import pytest
import torch

from pipeline.allocators import ALLOCATORS
from pipeline.allocators.base import Request, width_options
from pipeline.allocators.sensitivity import interpolated, monotone
from pipeline.core.errors import ConfigError
from pipeline.pruning.analysis import analyse
from pipeline.pruning.macs import MacsEstimator
from pipeline.pruning.surgery import UnitGroup
from tests.tiny_models import tiny_resnet

SIZES = {"a": 32, "b": 32, "c": 16}
# a is cheap to cut, b is steep, c in between: errors at widths 8, 16, 24, 32 (c: 8, 16)
CURVES = {"a": {8: 0.30, 16: 0.10, 24: 0.02, 32: 0.0}, "b": {8: 3.0, 16: 1.0, 24: 0.30, 32: 0.0}, "c": {8: 0.5, 16: 0.0}}


def _request(ratio):
    groups = [UnitGroup(name, "channel", size, [name], []) for name, size in SIZES.items()]
    scores = {name: torch.rand(size) for name, size in SIZES.items()}
    return Request(groups, scores, None, 8, True, 0.9, "uniform", ratio=ratio, sensitivity=CURVES)


@pytest.mark.parametrize("ratio", [0.25, 0.4, 0.5, 0.6])
def test_the_least_total_sensitivity_within_the_kept_units(ratio):
    allocation = ALLOCATORS.load("sensitivity")(_request(ratio))
    room = (1.0 - ratio) * sum(SIZES.values())
    plans = [dict(zip(CURVES, ws)) for ws in itertools.product(*(sorted(c) for c in CURVES.values()))]
    fitting = [p for p in plans if sum(p.values()) <= room + 1e-9]
    best = min(fitting, key=lambda p: sum(CURVES[n][w] for n, w in p.items()))
    total = lambda p: sum(CURVES[n][w] for n, w in p.items())  # noqa: E731
    assert sum(allocation.kept.values()) <= room + 1e-9
    assert total(allocation.kept) == pytest.approx(total(best))
    assert allocation.details["sensitivity"]["b"]["kept"] == allocation.kept["b"]


def test_curves_are_interpolated_between_measured_widths_and_noise_below_a_wider_width_is_ignored():
    assert interpolated({8: 1.0, 24: 0.2, 32: 0.0}, [8, 16, 24, 32]) == pytest.approx({8: 1.0, 16: 0.6, 24: 0.2, 32: 0.0})
    assert monotone({8: 0.5, 16: 0.6, 24: -0.1, 32: 0.0}) == {8: 0.6, 16: 0.6, 24: 0.0, 32: 0.0}


def test_a_macs_target_is_met_on_a_real_model_at_the_least_sensitivity_there_is():
    torch.manual_seed(0)
    model = tiny_resnet().eval()
    example = torch.randn(1, 3, 32, 32)
    groups = analyse(model, example).groups
    estimator = MacsEstimator(model, example, groups)
    curves = {g.name: {8: float(i + 1), g.size: 0.0} for i, g in enumerate(groups)}  # each group its own steepness
    request = Request(groups, {g.name: torch.rand(g.size) for g in groups}, estimator, 8, False, 0.9, "uniform",
                      macs_reduction=1.4, sensitivity=curves)  # fmt: skip
    allocation = ALLOCATORS.load("sensitivity")(request)
    options = {g.name: width_options(g, request) for g in groups}
    error = lambda kept: sum(interpolated(curves[n], [w])[w] for n, w in kept.items())  # noqa: E731
    fitting = [dict(zip(options, ws)) for ws in itertools.product(*options.values())]
    fitting = [p for p in fitting if estimator.dense / estimator.estimate(p) >= 1.4]
    assert estimator.dense / estimator.estimate(allocation.kept) >= 1.4
    assert error(allocation.kept) == pytest.approx(min(error(p) for p in fitting))
    with pytest.raises(ConfigError, match="out of reach"):
        ALLOCATORS.load("sensitivity")(Request(**{**vars(request), "macs_reduction": 50.0}))


def test_a_default_block_too_coarse_for_the_macs_target_is_halved_before_measuring():
    from pipeline.allocators.sensitivity import block_for

    model = tiny_resnet().eval()
    example = torch.randn(1, 3, 32, 32)
    groups = analyse(model, example).groups
    estimator = MacsEstimator(model, example, groups)
    scores = {g.name: torch.rand(g.size) for g in groups}

    def fewest(step):  # the fewest MACs with every group at its narrowest on the block
        request = Request(groups, scores, estimator, step, True, 0.9)
        return estimator.estimate({g.name: width_options(g, request)[0] for g in groups})

    assert fewest(8) < fewest(16)  # the tiny model's 16- and 24-channel groups can go narrower on 8
    target = estimator.dense / (0.5 * (fewest(8) + fewest(16)))
    request = Request(groups, scores, estimator, 16, True, 0.9, macs_reduction=target)
    assert block_for(request) == 8
    assert block_for(Request(**{**vars(request), "round_to_is_default": False})) == 16
    assert block_for(Request(**{**vars(request), "macs_reduction": 1.1})) == 16


def test_a_criterions_own_counts_bound_the_widths_unless_they_alone_cut_beyond_the_budget():
    from pipeline.allocators.sensitivity import bounds_for

    shallow, deep = {"a": 24, "b": 32, "c": 16}, {"a": 8, "b": 8, "c": 8}  # 72 and 24 of 80 units kept
    request = _request(0.5)  # 40 units kept
    assert bounds_for(Request(**{**vars(request), "own": shallow})) == shallow
    assert bounds_for(Request(**{**vars(request), "own": deep})) is None
    assert bounds_for(request) is None
    bounded = ALLOCATORS.load("sensitivity")(Request(**{**vars(request), "own": shallow}))
    assert all(bounded.kept[name] <= shallow[name] for name in shallow) and sum(bounded.kept.values()) <= 40

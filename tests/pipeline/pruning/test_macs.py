import pytest
import torch

from pipeline.allocators.base import kept_counts
from pipeline.models.build import build_model
from pipeline.pruning import macs, surgery
from pipeline.pruning.analysis import analyse
from tests.tiny_models import TINY_SPECS


@pytest.mark.parametrize("kind", sorted(TINY_SPECS))
def test_estimated_macs_equal_the_counted_macs_after_removal(kind):
    torch.manual_seed(0)
    model = build_model(TINY_SPECS[kind]).eval()
    example = torch.randn(1, 3, 32, 32)
    groups = analyse(model, example).groups
    estimator = macs.MacsEstimator(model, example, groups)
    kept = kept_counts(groups, 0.5, 4, 0.9)
    removal = {g.name: list(range(g.size - kept[g.name])) for g in groups}
    surgery.apply_removal(model, example, groups, removal)
    assert macs.count(model, example)[0] == estimator.estimate(kept) < estimator.dense


def test_conv_and_linear_macs_by_hand():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 4, 10))
    total, params = macs.count(model, torch.randn(1, 3, 4, 4))
    assert total == 8 * 4 * 4 * 3 * 3 * 3 + 10 * 128
    assert params == sum(p.numel() for p in model.parameters())

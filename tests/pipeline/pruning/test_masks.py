import pytest
import torch

from pipeline.allocators.base import lowest
from pipeline.models.clone import clone_model
from pipeline.pruning.analysis import analyse
from pipeline.pruning.masks import zeroed
from pipeline.pruning.surgery import apply_removal
from tests.tiny_models import tiny_mobile, tiny_resnet, tiny_vit


@pytest.mark.parametrize("build, shape", [(tiny_resnet, (3, 32, 32)), (tiny_mobile, (3, 32, 32)), (tiny_vit, (3, 32, 32))])
def test_zeroed_units_compute_what_removed_units_compute(build, shape):
    torch.manual_seed(0)
    model = build().eval()
    example = torch.randn(4, *shape)
    groups = analyse(model, example).groups
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for group in groups:
        units = lowest(torch.rand(group.size), group.size // 2)
        removed = clone_model(model)
        apply_removal(removed, example, groups, {group.name: units})
        with torch.no_grad(), zeroed(model, group, units):
            masked = model(example)
        torch.testing.assert_close(masked, removed(example), atol=1e-4, rtol=1e-4, msg=group.name)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # every weight restored

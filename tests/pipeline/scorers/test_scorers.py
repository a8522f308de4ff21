import pytest
import torch
import torch.nn as nn

from pipeline.pruning.analysis import analyse
from pipeline.scorers import SCORERS
from pipeline.scorers.base import ScoreContext
from pipeline.statistics import calibration
from tests.tiny_models import TINY_SPECS


def _middle_group_model():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),  # stem
        nn.Conv2d(4, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),  # the scored group: "2"
        nn.Conv2d(6, 4, 1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    ).eval()
    model[3].weight.data.uniform_(-1, 1)
    model[3].bias.data.uniform_(-1, 1)
    return model


def _context(model, needs=()):
    example = torch.randn(1, 3, 8, 8)
    groups = analyse(model, example).groups
    batches = [(torch.randn(4, 3, 8, 8), torch.randint(0, 3, (4,))) for _ in range(2)]
    consumers = sorted({c.module for g in groups for c in g.consumers})
    stats = calibration.collect(model, batches, consumers, needs) if needs else {}
    return ScoreContext(model=model, groups=groups, stats=stats, seed=0)


def test_l1_by_hand_is_the_mean_over_coupled_layers():
    model = _middle_group_model()
    ctx = _context(model)
    group = next(g for g in ctx.groups if g.name == "2")
    conv, bn, consumer = model[2], model[3], model[5]
    per_layer = torch.stack(
        [
            conv.weight.detach().abs().sum(dim=(1, 2, 3)),
            conv.bias.detach().abs(),
            bn.weight.detach().abs(),
            bn.bias.detach().abs(),
            consumer.weight.detach().abs().sum(dim=(0, 2, 3)),
        ]
    ).double()
    torch.testing.assert_close(SCORERS.load("l1")().score(ctx)[group.name], per_layer.mean(0))


def test_bn_scale_is_gamma():
    model = _middle_group_model()
    ctx = _context(model)
    torch.testing.assert_close(SCORERS.load("bn-scale")().score(ctx)["2"], model[3].weight.detach().abs().double())


def test_taylor_by_hand():
    model = _middle_group_model()
    ctx = _context(model, needs=SCORERS.load("taylor").needs)
    grads = ctx.stats[f"{calibration.WEIGHT_GRADS}/2.weight"]
    expected_conv = (model[2].weight.detach().double() * grads).abs().sum(dim=(1, 2, 3))
    scores = SCORERS.load("taylor")().score(ctx)["2"]
    # the conv's own weights are one of the five coupled slices averaged
    assert scores.shape == (6,) and torch.all(scores * 5 >= expected_conv - 1e-12)


@pytest.mark.parametrize("scorer", SCORERS.names())
@pytest.mark.parametrize("kind", sorted(TINY_SPECS))
def test_every_scorer_scores_every_unit_of_every_tiny_model(scorer, kind):
    from pipeline.models.build import build_model

    torch.manual_seed(0)
    model = build_model(TINY_SPECS[kind]).eval()
    for module in model.modules():  # trained-like BatchNorm scales, not all ones
        if isinstance(module, nn.BatchNorm2d):
            module.weight.data.uniform_(0.5, 1.5)
        if isinstance(module, nn.Linear) and not module.weight.any():  # torchvision zero-inits ViT heads
            module.weight.data.normal_(0, 0.1)
    cls = SCORERS.load(scorer)
    example = torch.randn(1, 3, 32, 32)
    groups = analyse(model, example).groups
    inputs = torch.randn(16, 3, 32, 32)
    with torch.no_grad():  # half the labels are the model's own predictions (C-SWAP scores those), half every class
        labels = torch.cat([model(inputs[:8]).argmax(1), torch.arange(8)])
    batches = [(inputs, labels)]
    consumers = sorted({c.module for g in groups for c in g.consumers})
    stats = calibration.collect(model, batches, consumers, cls.needs) if cls.needs else {}
    first = cls().score(ScoreContext(model=model, groups=groups, stats=stats, seed=3, batches=lambda: batches, example=example))
    again = cls().score(ScoreContext(model=model, groups=groups, stats=stats, seed=3, batches=lambda: batches, example=example))
    if not first:
        pytest.skip(f"{scorer} covers no group of the tiny {kind} model")
    in_scope = [g for g in groups if cls.kinds is None or g.kind in cls.kinds]
    assert set(first) == {g.name for g in in_scope}  # every group the criterion covers, nothing else
    for group in in_scope:
        assert first[group.name].shape == (group.size,)
        assert torch.isfinite(first[group.name]).all()
        torch.testing.assert_close(first[group.name], again[group.name])  # deterministic
    if scorer != "random":  # data or weights distinguish units
        assert any(first[g.name].std() > 0 for g in in_scope)

"""VBP, SNIP and Class-Aware on constructed models whose answer is known."""

import torch
import torch.nn as nn

from pipeline.pruning.analysis import analyse
from pipeline.scorers import SCORERS
from pipeline.scorers.base import ScoreContext, ScorerOptions
from pipeline.statistics import calibration


def _context(model, example, batches, scorer):
    groups = analyse(model, example).groups
    consumers = sorted({c.module for g in groups for c in g.consumers})
    stats = calibration.collect(model, batches, consumers, SCORERS.load(scorer).needs)
    return ScoreContext(model=model, groups=groups, stats=stats, batches=lambda: batches)


def test_vbp_scores_post_activation_variance():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5), nn.GELU(), nn.Linear(5, 3)).eval()
    batches = [(torch.randn(32, 4), torch.zeros(32, dtype=torch.long)) for _ in range(3)]
    ctx = _context(model, torch.randn(1, 4), batches, "vbp")
    with torch.no_grad():
        hidden = torch.cat([model[3](model[2](model[1](model[0](x)))) for x, _ in batches]).double()
    torch.testing.assert_close(SCORERS.load("vbp")().score(ctx)["2"], hidden.var(0, unbiased=False))


def test_vbp_leaves_attention_heads_alone():
    from pipeline.models.build import build_model
    from tests.tiny_models import TINY_SPECS

    model = build_model(TINY_SPECS["vit"]).eval()
    ctx = _context(model, torch.randn(1, 3, 32, 32), [(torch.randn(2, 3, 32, 32), torch.zeros(2, dtype=torch.long))], "vbp")
    kinds = {g.kind for g in ctx.groups if g.name in SCORERS.load("vbp")().score(ctx)}
    assert kinds == {"neuron"}


def test_snip_is_the_layer_normalised_gate_gradient():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 7), nn.ReLU(), nn.Linear(7, 3)).eval()
    batches = [(torch.randn(16, 5), torch.randint(0, 3, (16,))) for _ in range(2)]
    ctx = _context(model, torch.randn(1, 5), batches, "snip")
    gate = ctx.stats["input_grads/4/gate"].abs()
    torch.testing.assert_close(SCORERS.load("snip")().score(ctx)["2"], gate / gate.mean())


def test_snip_at_init_scores_a_fresh_copy():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 7), nn.ReLU(), nn.Linear(7, 3)).eval()
    batches = [(torch.randn(16, 5), torch.randint(0, 3, (16,)))]
    ctx = _context(model, torch.randn(1, 5), batches, "snip")
    trained = SCORERS.load("snip")().score(ctx)["2"]
    fresh = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 7), nn.ReLU(), nn.Linear(7, 3)).eval()
    ctx.options, ctx.fresh_model = ScorerOptions(snip_at_init=True), lambda: fresh
    at_init = SCORERS.load("snip")().score(ctx)["2"]
    expected = calibration.collect(fresh, batches, ["4"], ("input_grads",))["input_grads/4/gate"].abs()
    torch.testing.assert_close(at_init, expected / expected.mean())
    assert not torch.allclose(at_init, trained)


class _OneClassFilters(nn.Module):
    """Input class c is the constant image of colour c. Filter k < 3 of `pick` fires for class k
    only; filter 3 fires for every class."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 3, 1)
        self.pick = nn.Conv2d(3, 4, 1)
        self.mix = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(4, 3)
        with torch.no_grad():
            self.stem.weight.copy_(torch.eye(3).reshape(3, 3, 1, 1))
            self.stem.bias.zero_()
            weight = torch.zeros(4, 3, 1, 1)
            weight[:3, :, 0, 0] = torch.eye(3)
            weight[3, :, 0, 0] = 1.0
            self.pick.weight.copy_(weight)
            self.pick.bias.fill_(-0.5)

    def forward(self, x):
        x = torch.relu(self.pick(torch.relu(self.stem(x))))
        return self.fc(torch.relu(self.mix(x)).mean(dim=(2, 3)))


def test_class_aware_counts_the_classes_each_filter_matters_to():
    torch.manual_seed(0)
    model = _OneClassFilters().eval()
    images, labels = [], []
    for c in range(3):
        image = torch.zeros(4, 3, 5, 5)
        image[:, c] = 1.0
        images.append(image)
        labels.append(torch.full((4,), c))
    batches = [(torch.cat(images), torch.cat(labels))]
    ctx = _context(model, torch.zeros(1, 3, 5, 5), batches, "class-aware")
    scores = SCORERS.load("class-aware")().score(ctx)["pick"]
    assert torch.allclose(scores.round(), torch.tensor([1.0, 1.0, 1.0, 3.0], dtype=torch.float64))
    assert scores.argmin() < 3 and scores.argmax() == 3  # the single-class filters go first


def test_vbp_ranks_mlp_neurons_globally_and_conv_channels_per_layer():
    from pipeline.models.build import build_model
    from tests.tiny_models import TINY_SPECS

    vbp = SCORERS.load("vbp")()
    for kind, expected in (("vit", "global"), ("resnet", "uniform")):
        groups = analyse(build_model(TINY_SPECS[kind]).eval(), torch.randn(1, 3, 32, 32)).groups
        assert vbp.ranking_for(groups) == expected

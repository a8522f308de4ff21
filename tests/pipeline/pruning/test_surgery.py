import copy

import pytest
import torch

from pipeline.models.build import build_model
from pipeline.pruning import surgery
from pipeline.pruning.analysis import analyse
from tests.tiny_models import TINY_SPECS

EXAMPLE = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _model(kind):
    torch.manual_seed(0)
    model = build_model(TINY_SPECS[kind])
    for module in model.modules():  # BatchNorm with non-trivial statistics and shifts
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.3, 0.3)
            module.bias.data.uniform_(-0.3, 0.3)
    return model.eval()


def test_tiny_resnet_groups_follow_residual_coupling():
    model = _model("resnet")
    analysis = analyse(model, EXAMPLE)
    by_name = {g.name: g for g in analysis.groups}
    assert analysis.stem == "stem.0" and analysis.classifier == "fc"
    assert set(by_name) == {"a1", "b1", "b2"}  # the stem's residual stream is kept whole
    assert sorted(by_name["b2"].producers) == ["b2", "b_short.0"]  # residual partners go together
    assert [c.module for c in by_name["b2"].consumers] == ["fc"]
    assert [c.module for c in by_name["a1"].consumers] == ["a2"]
    assert any("stem.0" in note for note in analysis.notes)


def test_a_latency_budget_may_prune_the_stem_and_the_residual_stream_it_feeds():
    model = _model("resnet")
    analysis = analyse(model, EXAMPLE, keep_stem=False)
    stream = next(g for g in analysis.groups if "stem.0" in g.producers)
    assert set(stream.producers) == {"stem.0", "a2"}  # the stem and the block that adds into its stream
    assert {"a1", "b1", "b2"} <= {g.name for g in analysis.groups}
    assert not any("stem.0" in note for note in analysis.notes)
    kept = analyse(model, EXAMPLE, ("stem.*",), keep_stem=False)  # --keep-layers still keeps it whole
    assert not any("stem.0" in g.producers for g in kept.groups)


def test_concat_consumer_channels_are_offset_per_branch():
    analysis = analyse(_model("concat"), EXAMPLE)
    by_name = {g.name: g for g in analysis.groups}
    assert by_name["right.0"].consumers[0].module == "mix.0"
    assert by_name["right.0"].consumers[0].channels == list(range(16, 40))
    assert by_name["hidden"].kind == "neuron" and by_name["hidden"].consumers[0].module == "fc"


def test_depthwise_conv_is_pruned_with_its_expansion():
    analysis = analyse(_model("mobile"), EXAMPLE)
    expand = next(g for g in analysis.groups if g.producers == ["expand.0"])
    assert {c.module for c in expand.consumers} == {"depthwise.0", "project.0"}
    assert any(c.depthwise for c in expand.consumers)


@pytest.mark.parametrize("kind", sorted(TINY_SPECS))
def test_removal_equals_cutting_the_units_off(kind):
    """Removing units must give exactly what the dense model gives when nothing reads them."""
    model = _model(kind)
    analysis = analyse(model, EXAMPLE)
    assert analysis.groups
    removal = {g.name: list(range(0, g.size, 3))[: g.size - 1] for g in analysis.groups}
    cut = copy.deepcopy(model)
    with torch.no_grad():
        for group in analysis.groups:
            for consumer in group.consumers:
                if not consumer.depthwise:
                    weight = cut.get_submodule(consumer.module).weight
                    weight[:, [c for c, u in zip(consumer.channels, consumer.units) if u in set(removal[group.name])]] = 0
    pruned = copy.deepcopy(model)
    surgery.apply_removal(pruned, EXAMPLE, analysis.groups, removal)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), cut(x), atol=1e-5, rtol=1e-5)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())


def test_heads_are_removed_with_num_heads_updated():
    model = _model("vit")
    analysis = analyse(model, EXAMPLE)
    heads = [g for g in analysis.groups if g.kind == "head"]
    neurons = [g for g in analysis.groups if g.kind == "neuron"]
    assert len(heads) == 2 and all(g.size == 4 for g in heads) and len(neurons) == 2
    surgery.apply_removal(model, EXAMPLE, analysis.groups, {heads[0].name: [1, 3]})
    attention = model.get_submodule(heads[0].name)
    assert attention.num_heads == 2 and attention.qkv.out_features == 3 * 2 * 8 and attention.proj.in_features == 16


def test_option_a_shortcut_channels_are_detected_and_kept():
    model = build_model("cifar:resnet20").eval()
    analysis = analyse(model, EXAMPLE)
    assert any("hard-codes the channel count" in note for note in analysis.notes)
    assert len(analysis.groups) == 9  # the inner conv of every block
    assert all(g.producers == [g.name] and g.name.endswith("conv1") for g in analysis.groups)


def test_keep_layers_patterns_exclude_groups():
    analysis = analyse(_model("resnet"), EXAMPLE, keep_patterns=("b*",))
    assert {g.name for g in analysis.groups} == {"a1"}


def test_batchnorm_recalibration_matches_the_data():
    model = _model("resnet")
    batches = [(torch.randn(8, 3, 32, 32), torch.zeros(8, dtype=torch.long)) for _ in range(3)]
    assert surgery.recalibrate_batchnorm(model, batches) == 6
    inputs = torch.cat([b[0] for b in batches])
    with torch.no_grad():
        expected = model.stem[0](inputs).mean(dim=(0, 2, 3))
    torch.testing.assert_close(model.stem[1].running_mean, expected, atol=1e-5, rtol=1e-4)
    assert not model.training

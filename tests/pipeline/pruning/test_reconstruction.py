"""Reconstruction selection with known answers: duplicated units, closed-form updates, masking."""

import pytest
import torch
import torch.nn as nn

from pipeline.pruning import reconstruction
from pipeline.pruning.analysis import analyse
from pipeline.pruning.compensation import refit_least_squares
from pipeline.pruning.surgery import apply_removal


def _mlp_with_a_duplicate():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
    with torch.no_grad():  # hidden unit 5 of the middle layer repeats unit 2: removing it loses nothing
        model[2].weight[5] = model[2].weight[2]
        model[2].bias[5] = model[2].bias[2]
    return model


def test_a_unit_the_others_rebuild_exactly_is_the_one_removed_and_the_refit_restores_the_output():
    model = _mlp_with_a_duplicate()
    example = torch.randn(64, 5)
    groups = [g for g in analyse(model, example[:1]).groups if g.name == "2"]
    scores = {"2": torch.tensor([1.0, 2.0, 9.0, 3.0, 4.0, 8.0])}  # the scorer would remove unit 0
    batches = [example[:32], example[32:]]
    removal, errors = reconstruction.select(
        model, _mlp_with_a_duplicate(), groups, scores, {"2": 5}, batches, example[:1], 1e-9, lambda g: [0]
    )
    assert removal["2"] in ([2], [5]) and errors["2"]["reconstruction"] < errors["2"]["scores"]
    pruned = _mlp_with_a_duplicate()
    apply_removal(pruned, example[:1], groups, removal)
    refit_least_squares(model, pruned, groups, removal, [(b, None) for b in batches], example[:1], ridge=1e-9)
    torch.testing.assert_close(pruned(example), model(example), atol=1e-4, rtol=1e-4)


def test_the_closed_form_updates_equal_a_refit_from_scratch():
    torch.manual_seed(1)
    rows, targets = torch.randn(400, 12).double(), torch.randn(400, 4).double()
    fit = reconstruction.Fit(rows.T @ rows, rows.T @ targets, {u: [2 * u, 2 * u + 1] for u in range(6)}, ridge=1e-3)
    state = reconstruction._State(fit)
    removed: set[int] = set()
    for unit in (4, 1, 3):
        rise = float(state.rises([unit])[0])
        before = fit.error(removed)
        state.remove(unit)
        removed.add(unit)
        assert abs(fit.error(removed) - before - rise) < 1e-8 * max(1.0, abs(before))
        columns, weights = fit.weights(removed)
        assert state.columns == columns
        torch.testing.assert_close(state.weights, weights, atol=1e-9, rtol=1e-7)


def test_greedy_removal_drops_the_columns_that_carry_nothing():
    torch.manual_seed(2)
    rows = torch.randn(300, 6).double()
    rows[:, 4] = 0.5 * rows[:, 0] - rows[:, 1]  # unit 4 is a combination of units 0 and 1
    targets = rows @ torch.randn(6, 3).double()
    fit = reconstruction.Fit(rows.T @ rows, rows.T @ targets, {u: [u] for u in range(6)}, ridge=1e-10)
    assert reconstruction.greedy_removal([fit], torch.arange(6.0, 0.0, -1.0), 1) in ([0], [1], [4])
    assert reconstruction.greedy_removal([fit], torch.tensor([9.0, 9.0, 1.0, 1.0, 9.0, 1.0]), 1) == [4]


def _vit_with_duplicates():
    """A tiny ViT whose first block has MLP neuron 7 = neuron 3 and attention head 2 = head 0."""
    from pipeline.models.attention import convert_attention
    from tests.tiny_models import tiny_vit

    torch.manual_seed(3)
    model = tiny_vit().eval()
    convert_attention(model)
    block = model.encoder.layers.encoder_layer_0
    with torch.no_grad():
        block.mlp[0].weight[7], block.mlp[0].bias[7] = block.mlp[0].weight[3], block.mlp[0].bias[3]
        attention = block.self_attention
        width = attention.head_dim
        for part in range(3):  # rows [q | k | v] x heads x head_dim
            rows = slice(part * 4 * width, (part + 1) * 4 * width)
            weight, bias = attention.qkv.weight[rows], attention.qkv.bias[rows]
            weight[2 * width : 3 * width], bias[2 * width : 3 * width] = weight[:width], bias[:width]
    return model


def test_vit_neurons_and_heads_the_others_rebuild_are_removed_and_the_refit_restores_the_output():
    model = _vit_with_duplicates()
    example = torch.randn(48, 3, 32, 32)
    block = "encoder.layers.encoder_layer_0"
    wanted = {f"{block}.mlp.0": 63, f"{block}.self_attention": 3}
    groups = [g for g in analyse(model, example[:1]).groups if g.name in wanted]
    scores = {g.name: torch.arange(g.size, 0.0, -1.0) for g in groups}  # the scorer would remove the last unit
    batches = [example[:24], example[24:]]
    removal, _ = reconstruction.select(
        model, _vit_with_duplicates(), groups, scores, wanted, batches, example[:1], 1e-9, lambda g: [g.size - 1]
    )
    assert removal[f"{block}.mlp.0"] in ([3], [7]) and removal[f"{block}.self_attention"] in ([0], [2])
    pruned = _vit_with_duplicates()
    apply_removal(pruned, example[:1], groups, removal)
    refit_least_squares(model, pruned, groups, removal, [(b, None) for b in batches], example[:1], ridge=1e-9)
    torch.testing.assert_close(pruned(example), model(example), atol=1e-4, rtol=1e-4)


def _conv_chain():
    layers = []
    for inputs, outputs in ((3, 16), (16, 16), (16, 16), (16, 16)):
        layers += [nn.Conv2d(inputs, outputs, 3, padding=1, bias=False), nn.BatchNorm2d(outputs), nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()


def _resnet_with_trained_norms():
    """Residual joins whose residual channels are pruned too: a layer feeding one is walked on a masked copy."""
    from tests.tiny_models import tiny_resnet

    model = tiny_resnet().eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5), module.running_var.uniform_(0.5, 2), module.weight.uniform_(0.5, 2)
    return model


@pytest.mark.parametrize("build", [_conv_chain, _resnet_with_trained_norms], ids=["chain", "residual"])
def test_each_group_is_chosen_on_the_inputs_the_lstsq_refit_will_give_it(build):
    from pipeline.models.clone import clone_model
    from pipeline.pruning.residual import Joins
    from pipeline.pruning.surgery import execution_order

    torch.manual_seed(0)
    model = build()
    example = torch.randn(32, 3, 16, 16)
    groups = analyse(model, example[:1]).groups
    scores = {g.name: torch.rand(g.size) for g in groups}
    kept = {g.name: g.size // 2 for g in groups}
    batches = [example[:16], example[16:]]
    working = clone_model(model)
    removal, _ = reconstruction.select(
        model, working, groups, scores, kept, batches, example[:1], 1e-3, lambda g: list(range(g.size - kept[g.name]))
    )
    pruned = clone_model(model)
    apply_removal(pruned, example[:1], groups, removal)
    refit_least_squares(model, pruned, groups, removal, [(b, None) for b in batches], example[:1], ridge=1e-3)
    apply_removal(working, example[:1], groups, removal)
    # the layers re-fitted on the way, the last group's consumers and what follows them included, equal the
    # re-fit of the pruned model: the selection's working copy is the re-fitted model
    layers = execution_order(model, example[:1])
    consumers = sorted(layers.index(c.module) for g in groups for c in g.consumers if removal.get(g.name))
    assert len(consumers) >= 3
    if build is _resnet_with_trained_norms:  # a layer feeding a join whose residual channels are partly removed
        joined = [name for name in layers[consumers[0] :] if name in Joins(model, working).of]
        assert joined and any(g.size > kept[g.name] for g in groups for p in g.params if p.module in joined and p.dim == 0)
    for name in layers:
        torch.testing.assert_close(working.get_submodule(name).weight, pruned.get_submodule(name).weight, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(working(example), pruned(example), atol=1e-4, rtol=1e-4)

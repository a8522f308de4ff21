"""Mean-shift compensation and the least-squares re-fit, checked where the answer is exact."""

import copy

import torch
import torch.nn as nn

from pipeline.pruning import compensation, surgery
from pipeline.pruning.analysis import analyse
from pipeline.statistics import calibration


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3)
    ).eval()


def _conv_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 6, 3, padding=1),
        nn.ReLU(),  # the pruned group: "2", consumed by the 1x1 conv "4"
        nn.Conv2d(6, 5, 1, bias=False),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(5, 3),
    ).eval()


def _compensated(model, example, batches, group_name, units, method, **kwargs):
    groups = analyse(model, example).groups
    removal = {group_name: units}
    pruned = copy.deepcopy(model)
    added = []
    if method == "mean":
        consumers = sorted({c.module for g in groups for c in g.consumers})
        stats = calibration.collect(model, batches, consumers, ("input_moments",))
        added = compensation.fold_means(pruned, groups, removal, stats)
    surgery.apply_removal(pruned, example, groups, removal)
    if method == "lstsq":
        compensation.refit_least_squares(model, pruned, groups, removal, batches, example, **kwargs)
    return pruned, added


def test_mean_shift_is_exact_for_a_constant_unit_with_a_linear_consumer():
    model = _mlp()
    with torch.no_grad():  # hidden neuron 2 of layer "2" is 0.7 whatever the input
        model[2].weight[2] = 0.0
        model[2].bias[2] = 0.7
    batches = [(torch.randn(16, 5), torch.zeros(16, dtype=torch.long)) for _ in range(2)]
    pruned, _ = _compensated(model, torch.randn(1, 5), batches, "2", [2], "mean")
    x = torch.randn(32, 5)
    assert pruned[2].out_features == 5
    torch.testing.assert_close(pruned(x), model(x), atol=1e-5, rtol=0)
    plain, _ = _compensated(model, torch.randn(1, 5), batches, "2", [2], "none")
    assert (plain(x) - model(x)).abs().max() > 1e-3  # without compensation the output moves


def test_mean_shift_is_exact_for_a_constant_channel_with_a_conv_consumer():
    model = _conv_net()
    with torch.no_grad():  # channel 4 of conv "2" is the constant map 0.5
        model[2].weight[4] = 0.0
        model[2].bias[4] = 0.5
    batches = [(torch.randn(8, 3, 10, 10), torch.zeros(8, dtype=torch.long)) for _ in range(2)]
    pruned, added = _compensated(model, torch.randn(1, 3, 10, 10), batches, "2", [4], "mean")
    assert added == ["4"] and pruned[4].bias is not None  # the 1x1 consumer had no bias
    x = torch.randn(4, 3, 10, 10)
    torch.testing.assert_close(pruned(x), model(x), atol=1e-5, rtol=0)


def test_least_squares_refit_recovers_linearly_spanned_units():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 6), nn.Identity(), nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3)
    ).eval()
    with torch.no_grad():  # neuron 5 = 2 * neuron 0 - neuron 1, so the kept neurons span it
        model[2].weight[5] = 2 * model[2].weight[0] - model[2].weight[1]
        model[2].bias[5] = 2 * model[2].bias[0] - model[2].bias[1]
    batches = [(torch.randn(64, 5), torch.zeros(64, dtype=torch.long)) for _ in range(2)]
    pruned, _ = _compensated(model, torch.randn(1, 5), batches, "2", [5], "lstsq", ridge=1e-10)
    x = torch.randn(32, 5)
    torch.testing.assert_close(pruned(x), model(x), atol=1e-4, rtol=0)


def test_least_squares_refit_of_a_conv_consumer_beats_plain_removal():
    model = _conv_net()
    batches = [(torch.randn(8, 3, 10, 10), torch.zeros(8, dtype=torch.long)) for _ in range(4)]
    example = torch.randn(1, 3, 10, 10)
    refit, _ = _compensated(model, example, batches, "2", [0, 3, 5], "lstsq")
    plain, _ = _compensated(model, example, batches, "2", [0, 3, 5], "none")
    x = torch.cat([b[0] for b in batches])  # the data fitted on: least squares cannot do worse there
    with torch.no_grad():
        reference = model(x)  # every layer from the consumer on is re-fitted, the classifier included
        assert (refit(x) - reference).pow(2).mean() < 0.2 * (plain(x) - reference).pow(2).mean()


def _relu_pair_net():
    """Units 2k and 2k+1 of layer "2" are relu(u_k) and relu(-u_k); the consumer "4" computes their
    difference u_k, and its ReLU lets relu(u_k) through: without the odd units no linear fit rebuilds
    u_k, but unit 2k alone rebuilds what passes the ReLU."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(2, 2), nn.Identity(), nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 2), nn.ReLU(), nn.Linear(2, 3)
    ).eval()
    with torch.no_grad():
        model[2].weight.copy_(torch.tensor([[1.0, 0], [-1.0, 0], [0, 1.0], [0, -1.0]]))
        model[4].weight.copy_(torch.tensor([[1.0, -1.0, 0, 0], [0, 0, 1.0, -1.0]]))
        model[2].bias.zero_(), model[4].bias.zero_()
    return model


def _relu_output_error(steps, monkeypatch):
    monkeypatch.setattr(compensation, "GATE_STEPS", steps)
    model = _relu_pair_net()
    batches = [(torch.randn(256, 2), torch.zeros(256, dtype=torch.long)) for _ in range(2)]
    pruned, _ = _compensated(model, torch.randn(1, 2), batches, "2", [1, 3], "lstsq", ridge=1e-10)
    x = torch.cat([b[0] for b in batches])
    with torch.no_grad():
        return float((pruned[:6](x) - model[:6](x)).abs().max())


def test_the_relu_aware_refit_converges_to_what_passes_the_relu_and_the_plain_fit_does_not(monkeypatch):
    assert _relu_output_error(600, monkeypatch) < 1e-3
    assert _relu_output_error(0, monkeypatch) > 0.3


def test_the_default_relu_aware_steps_lower_the_error_after_the_relu(monkeypatch):
    assert _relu_output_error(compensation.GATE_STEPS, monkeypatch) < 0.75 * _relu_output_error(0, monkeypatch)

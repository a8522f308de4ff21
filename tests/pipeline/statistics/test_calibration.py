import numpy as np
import torch
import torch.nn as nn

from pipeline.statistics import calibration
from pipeline.statistics.calibration import WEIGHT_GRADS, collect


def _batches(count=3, size=5, shape=(3, 6, 6), classes=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.randn((size, *shape), generator=generator), torch.randint(0, classes, (size,), generator=generator))
        for _ in range(count)
    ]


def _conv_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    ).eval()


def test_input_moments_are_exact_float64_over_every_position():
    model, batches = _conv_net(), _batches()
    stats = collect(model, batches, ["2"], ("input_moments",))
    with torch.no_grad():
        acts = torch.cat([model[1](model[0](x)) for x, _ in batches]).double()
    observations = acts.permute(0, 2, 3, 1).reshape(-1, 4).numpy()
    np.testing.assert_allclose(stats["input_moments/2/mean"].numpy(), observations.mean(0), rtol=1e-10)
    np.testing.assert_allclose(stats["input_moments/2/var"].numpy(), observations.var(0), rtol=1e-9)
    assert stats["input_moments/2/count"].item() == observations.shape[0]


def test_class_moments_pool_spatially_per_class():
    model, batches = _conv_net(), _batches()
    stats = collect(model, batches, ["2"], ("class_moments",))
    with torch.no_grad():
        pooled = torch.cat([model[1](model[0](x)).mean(dim=(2, 3)) for x, _ in batches]).double()
    labels = torch.cat([y for _, y in batches])
    for row, label in enumerate(stats["class_moments/2/labels"].tolist()):
        members = pooled[labels == label]
        torch.testing.assert_close(stats["class_moments/2/mean"][row], members.mean(0))
        torch.testing.assert_close(stats["class_moments/2/var"][row], members.var(0, unbiased=False), atol=1e-12, rtol=1e-9)


def test_gate_gradient_equals_the_closed_form_on_a_two_layer_net():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
    batches = [(torch.randn(8, 5), torch.randint(0, 3, (8,))) for _ in range(2)]
    stats = collect(model, batches, ["2"], ("input_grads",))
    expected = torch.zeros(6, dtype=torch.float64)
    w2 = model[2].weight.detach().double()
    for x, y in batches:
        with torch.no_grad():
            hidden = torch.relu(model[0](x)).double()
            probabilities = torch.softmax(model(x).double(), 1)
        d_logits = (probabilities - nn.functional.one_hot(y, 3).double()) / x.shape[0]  # mean cross-entropy
        expected += (hidden * (d_logits @ w2)).sum(0)  # sum over samples of a * dL/da
    torch.testing.assert_close(stats["input_grads/2/gate"], expected, atol=1e-6, rtol=1e-5)


def test_weight_gradients_are_averaged_over_batches():
    model, batches = _conv_net(), _batches(count=2)
    stats = collect(model, batches, ["2"], (WEIGHT_GRADS,))
    expected = torch.zeros_like(model[0].weight, dtype=torch.float64)
    for x, y in batches:
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        expected += model[0].weight.grad.double() / len(batches)
    torch.testing.assert_close(stats[f"{WEIGHT_GRADS}/0.weight"], expected)


def test_synthetic_labels_use_the_models_prediction_and_do_not_double_count():
    model = _conv_net()
    batches = [(x, torch.full((x.shape[0],), -1)) for x, _ in _batches()]
    stats = collect(model, batches, ["2"], ("input_moments", "class_moments"))
    assert stats["input_moments/2/count"].item() == 3 * 5 * 36
    assert stats["class_moments/2/count"].sum().item() == 15


def test_backward_chunk_fits_what_autograd_saves_into_the_budget(monkeypatch):
    model, inputs = _conv_net(), _batches(count=1, size=6)[0][0]
    assert calibration.backward_chunk(model, inputs) > 1000  # a few KB per image: batches stay whole
    # the first conv saves its 3x6x6 input and the ReLU its 4x6x6 output, float32: 840 bytes an image
    monkeypatch.setattr(calibration, "BACKWARD_BYTES", 2000)
    assert 1 <= calibration.backward_chunk(model, inputs) <= 2


def test_statistics_of_chunked_backward_passes_equal_the_whole_batch(monkeypatch):
    needs = (WEIGHT_GRADS, "input_grads", "class_taylor", "input_moments")
    batches = _batches(count=2, size=5)
    whole = collect(_conv_net(), batches, ["2"], needs)
    monkeypatch.setattr(calibration, "BACKWARD_BYTES", 1)  # one image per backward pass
    model, sizes = _conv_net(), []
    model[0].register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[0]))
    chunked = collect(model, batches, ["2"], needs)
    assert sizes == [1] * 11  # the one-image probe, then 2 batches of 5 single-image passes
    assert whole.keys() == chunked.keys()
    for key in whole:
        torch.testing.assert_close(chunked[key], whole[key], rtol=1e-5, atol=1e-6)  # float32 sums, regrouped


def test_input_moments_merged_one_sample_at_a_time_equal_the_whole_batch(monkeypatch):
    batches = _batches(count=2, size=5)
    whole = collect(_conv_net(), batches, ["2"], ("input_moments",))
    monkeypatch.setattr(calibration.InputMoments, "CHUNK_ELEMENTS", 1)  # one sample per float64 copy
    merges, merge = [], calibration.InputMoments._merge
    monkeypatch.setattr(calibration.InputMoments, "_merge", lambda self, m, obs: merges.append(obs.shape) or merge(self, m, obs))
    chunked = collect(_conv_net(), batches, ["2"], ("input_moments",))
    assert merges == [(36, 4)] * 10  # 2 batches of 5 images, 6x6 positions each
    for key in whole:
        torch.testing.assert_close(chunked[key], whole[key])

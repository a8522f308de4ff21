import pytest
import torch

from pipeline.pruning import surgery
from pipeline.pruning.analysis import analyse
from pipeline.statistics import sensitivity
from tests.tiny_models import tiny_resnet


def test_curves_start_at_zero_and_grow_as_units_go():
    torch.manual_seed(0)
    model = tiny_resnet().eval()
    example = torch.randn(8, 3, 32, 32)
    groups = analyse(model, example).groups
    scores = {g.name: torch.rand(g.size) for g in groups}
    widths = {g.name: list(range(2, g.size + 1, 2)) for g in groups}
    curves = sensitivity.curves(model, groups, scores, widths, [example[:4], example[4:]])
    for group in groups:
        curve = curves[group.name]
        assert curve[group.size] == 0.0 and len(curve) == min(len(widths[group.name]), sensitivity.POINTS)
        assert curve[min(curve)] > 0.0  # cutting a group to its narrowest moves the outputs


def test_measured_widths_keep_both_ends_evenly():
    assert sensitivity.measured_widths([8, 16, 24], 6) == [8, 16, 24]
    assert sensitivity.measured_widths(list(range(8, 129, 8)), 4) == [8, 48, 88, 128]


def test_with_the_refit_a_unit_the_others_rebuild_costs_nothing():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 6), torch.nn.ReLU(),
                                torch.nn.Linear(6, 3)).eval()  # fmt: skip
    with torch.no_grad():  # hidden unit 5 of the middle layer repeats unit 2
        model[2].weight[5], model[2].bias[5] = model[2].weight[2], model[2].bias[2]
    inputs = torch.randn(64, 5)
    groups = [g for g in analyse(model, inputs[:1]).groups if g.name == "2"]
    scores = {"2": torch.tensor([1.0, 2.0, 9.0, 3.0, 4.0, 8.0])}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plain = sensitivity.curves(model, groups, scores, {"2": [5, 6]}, [inputs])["2"]
    refit = sensitivity.curves(model, groups, scores, {"2": [5, 6]}, [inputs], refit={"ridge": 1e-9, "select": "reconstruction"})
    assert plain[5] > 1e-3 and refit["2"][5] < 1e-6
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def _plans_setup():
    """A tiny ResNet with BatchNorm re-estimated on two batches, as the plans will have it (full widths move
    nothing), its groups, random scores, and its dense, half and quarter plans."""
    torch.manual_seed(0)
    model = tiny_resnet().eval()
    batches = [torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32)]
    groups = analyse(model, batches[0]).groups
    surgery.recalibrate_batchnorm(model, [(b, None) for b in batches])
    plans = [{g.name: max(1, g.size // part) for g in groups} for part in (1, 2, 4)]
    return model, batches, groups, {g.name: torch.rand(g.size) for g in groups}, plans


def test_a_plan_measured_whole_grows_with_its_cuts_and_leaves_the_model_alone():
    model, batches, groups, scores, (full, half, quarter) = _plans_setup()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    divergence = sensitivity.PlanLoss(model, groups, scores, batches)
    assert divergence(full) < 1e-6 < divergence(half) < divergence(quarter)
    assert divergence(half) == divergence(dict(reversed(half.items()))) and divergence.measured == 3  # each plan once
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_with_labels_a_plan_is_measured_by_its_cross_entropy():
    model, batches, groups, scores, (full, _, quarter) = _plans_setup()
    with torch.no_grad():
        labels = [model(b).argmax(1) for b in batches]  # what the dense model answers: it is right on all
        dense = sum(float(torch.nn.functional.cross_entropy(model(b), y, reduction="sum")) for b, y in zip(batches, labels)) / 16
    loss = sensitivity.PlanLoss(model, groups, scores, batches, labels)
    assert loss(full) == pytest.approx(dense, rel=1e-5) and loss(full) < loss(quarter)
    assert "cross-entropy" in loss.what and "divergence" in sensitivity.PlanLoss(model, groups, scores, batches).what


def test_the_first_images_are_cut_at_the_count_with_their_labels():
    batches = [(torch.randn(100, 3, 4, 4), torch.arange(100)) for _ in range(4)]
    images, labels = sensitivity.first_images(iter(batches), labelled=True)
    assert [b.shape[0] for b in images] == [100, 100, sensitivity.IMAGES - 200] == [y.shape[0] for y in labels]
    assert torch.equal(labels[2], torch.arange(sensitivity.IMAGES - 200))
    assert sensitivity.first_images(iter(batches), labelled=False)[1] is None
    assert [b.shape[0] for b in sensitivity.first_images(iter(batches), False, sensitivity.PLAN_IMAGES)[0]] == [100] * 4
    assert [b.shape[0] for b in sensitivity.first_images(iter(batches), False, 150)[0]] == [100, 50]

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


def test_a_plan_measured_whole_grows_with_its_cuts_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = tiny_resnet().eval()
    batches = [torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32)]
    groups = analyse(model, batches[0]).groups
    scores = {g.name: torch.rand(g.size) for g in groups}
    surgery.recalibrate_batchnorm(model, [(b, None) for b in batches])  # as the plans will have it: full widths move nothing
    before = {k: v.clone() for k, v in model.state_dict().items()}
    divergence = sensitivity.PlanDivergence(model, groups, scores, batches)
    full = {g.name: g.size for g in groups}
    half = {g.name: max(1, g.size // 2) for g in groups}
    quarter = {g.name: max(1, g.size // 4) for g in groups}
    assert divergence(full) < 1e-6 < divergence(half) < divergence(quarter)
    assert divergence(half) == divergence(dict(reversed(half.items()))) and divergence.measured == 3  # each plan once
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())

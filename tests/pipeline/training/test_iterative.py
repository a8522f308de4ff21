import torch

from pipeline.models.build import build_model
from pipeline.pruning.analysis import analyse
from pipeline.training import iterative
from tests.tiny_models import TINY_SPECS

EXAMPLE = torch.randn(1, 3, 32, 32)


def _setup():
    torch.manual_seed(0)
    model = build_model(TINY_SPECS["resnet"]).eval()
    groups = analyse(model, EXAMPLE).groups
    scores = {g.name: torch.arange(g.size, dtype=torch.float64) for g in groups}
    return model, groups, scores


def _rescore(model, groups):
    return {g.name: torch.arange(g.size, dtype=torch.float64) for g in groups}


def test_steps_remove_at_most_ten_percent_until_the_target():
    model, groups, scores = _setup()
    target = {g.name: g.size // 2 for g in groups}
    tuned = []
    schedule = iterative.run(
        model, example=EXAMPLE, groups=groups, first_scores=scores, target_kept=target, rescore=_rescore,
        recalibrate=lambda m: None, finetune=tuned.append, evaluate=lambda m: 0.9, dense_accuracy=0.9, max_acc_drop=0.01,
    )  # fmt: skip
    per_step = {g.name: -(-g.size // 10) for g in groups}  # at most 10% of the original width per step
    expected_steps = max(-(-(g.size - target[g.name]) // per_step[g.name]) for g in groups)
    assert len(schedule.steps) == expected_steps == len(tuned) == 4
    for step in schedule.steps:
        for group in step["groups"]:
            assert len(step["removal"][group["name"]]) <= per_step[group["name"]]
    replayed = build_model(TINY_SPECS["resnet"]).eval()
    iterative.replay(replayed, EXAMPLE, schedule.steps)
    assert [p.shape for p in replayed.parameters()] == [p.shape for p in schedule.model.parameters()]
    sizes = {g.name: g.size for g in analyse(schedule.model, EXAMPLE).groups}
    assert all(sizes[name] == kept for name, kept in target.items())


def test_schedule_stops_before_the_accuracy_tolerance_is_exceeded():
    model, groups, scores = _setup()
    accuracies = iter([0.89, 0.885, 0.87, 0.80])
    schedule = iterative.run(
        model, example=EXAMPLE, groups=groups, first_scores=scores, target_kept={g.name: 1 for g in groups},
        rescore=_rescore, recalibrate=lambda m: None, finetune=lambda m: None, evaluate=lambda m: next(accuracies),
        dense_accuracy=0.9, max_acc_drop=0.02,
    )  # fmt: skip
    assert len(schedule.steps) == 2 and "stopped before step 3" in schedule.notes[0]

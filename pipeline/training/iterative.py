"""Iterative pruning (Class-Aware Pruning's schedule): remove at most 10% of each group's original
units per step, re-estimate BatchNorm, fine-tune, re-score the pruned model, and stop before a step
would lose more accuracy than allowed against the dense model, or when the budget is reached."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from pipeline.allocators.base import lowest
from pipeline.models.clone import clone_model
from pipeline.pruning import surgery
from pipeline.pruning.analysis import analyse
from pipeline.pruning.surgery import UnitGroup

STEP_FRACTION = 0.1


@dataclass
class Schedule:
    model: nn.Module
    steps: list[dict] = field(default_factory=list)  # replayable: [{"groups": [...], "removal": {...}}]
    history: list[dict] = field(default_factory=list)  # per step: units removed, accuracy
    notes: list[str] = field(default_factory=list)


def _step_removal(groups: list[UnitGroup], scores: dict, sizes: dict, target: dict, original: dict) -> dict[str, list[int]]:
    removal = {}
    for group in groups:
        if group.name not in scores or group.name not in target:
            continue
        excess = sizes[group.name] - target[group.name]
        count = min(excess, math.ceil(STEP_FRACTION * original[group.name]))
        if count > 0:
            removal[group.name] = lowest(scores[group.name], sizes[group.name] - count)
    return removal


def run(
    dense: nn.Module,
    *,
    example: torch.Tensor,
    groups: list[UnitGroup],
    first_scores: dict,
    target_kept: dict[str, int],
    rescore: Callable,
    recalibrate: Callable,
    finetune: Callable,
    evaluate: Callable,
    dense_accuracy: float | None,
    max_acc_drop: float,
    keep_patterns: tuple[str, ...] = (),
) -> Schedule:
    schedule = Schedule(clone_model(dense))
    original = {g.name: g.size for g in groups}
    current_groups, scores = groups, first_scores
    while True:
        sizes = {g.name: g.size for g in current_groups}
        removal = _step_removal(current_groups, scores, sizes, target_kept, original)
        if not removal:
            break
        candidate = clone_model(schedule.model)
        surgery.apply_removal(candidate, example, current_groups, removal)
        recalibrate(candidate)
        finetune(candidate)
        accuracy = evaluate(candidate)
        step = len(schedule.steps) + 1
        if accuracy is not None and dense_accuracy is not None and accuracy < dense_accuracy - max_acc_drop:
            schedule.notes.append(
                f"iterative: stopped before step {step}: accuracy would fall to {accuracy:.4f} "
                f"(dense {dense_accuracy:.4f}, allowed drop {max_acc_drop:.4f})"
            )
            break
        schedule.steps.append(
            {
                "groups": [{"name": g.name, "kind": g.kind, "size": g.size} for g in current_groups if g.name in removal],
                "removal": removal,
            }
        )
        schedule.history.append({"step": step, "removed": sum(len(v) for v in removal.values()), "accuracy": accuracy})
        schedule.model = candidate
        current_groups = analyse(candidate, example, keep_patterns).groups
        current_groups = [g for g in current_groups if g.name in original]
        scores = rescore(candidate, current_groups)
    return schedule


def replay(model: nn.Module, example: torch.Tensor, steps: list[dict]) -> None:
    for step in steps:
        groups = [UnitGroup(g["name"], g["kind"], g["size"], producers=[]) for g in step["groups"]]
        surgery.apply_removal(model, example, groups, step["removal"])

"""How much accuracy each group's width costs, measured: per group and kept width, how far the model's
outputs on calibration images move from the dense ones (the KL divergence of the dense predictions
from the pruned) when only that group is cut to that width, its lowest-scored units first.
The units are zeroed in place instead of removed (pipeline.pruning.masks). The curves
are measured at a few widths per group (pipeline.allocators.sensitivity interpolates between them).

PlanDivergence measures a whole plan instead: every group cut at once, the units removed and BatchNorm
re-estimated as the pruned model will have them. Curves add up badly where cuts interact (on ResNet-56 each
of the last stage's blocks costs little cut alone and much cut together); a plan measured whole ranks plans
by their one-shot accuracy where the curves' sum does not."""

from __future__ import annotations

import torch

from pipeline.allocators.base import lowest, removal_of
from pipeline.models.clone import clone_model
from pipeline.pruning import reconstruction, surgery
from pipeline.pruning.masks import restore, zeroed
from pipeline.pruning.surgery import UnitGroup

POINTS = 6  # widths measured per group, the full width included
IMAGES = 256  # calibration images the divergence is averaged over


def measured_widths(widths: list[int], points: int = POINTS) -> list[int]:
    """Up to `points` of a group's allowed widths, evenly spaced, both ends included."""
    if len(widths) <= points:
        return list(widths)
    picks = {widths[round(i * (len(widths) - 1) / (points - 1))] for i in range(points)}
    return sorted(picks)


@torch.no_grad()
def curves(
    model: torch.nn.Module,
    groups: list[UnitGroup],
    scores: dict[str, torch.Tensor],
    widths: dict[str, list[int]],
    batches: list[torch.Tensor],
    update=lambda n=1: None,
    refit: dict | None = None,
) -> dict[str, dict[int, float]]:
    """{group: {width: divergence}} at `measured_widths` of each group's `widths`; 0 at its full width.
    `refit` ({"ridge", "select"}): measured after the consumers' least-squares re-fit (--compensate lstsq),
    the units chosen as --select chooses them, so the curve is what the pruned model will lose."""
    model.eval()
    dense = _predictions(model, batches)
    found = {}
    for group in groups:
        if group.name not in widths:
            continue
        chosen = _chooser(model, group, scores[group.name], widths[group.name], batches, refit)
        curve = {group.size: 0.0}
        for width in measured_widths(widths[group.name]):
            if width < group.size:
                units, fits = chosen(width)
                saved = reconstruction.refitted(model, group, fits, set(units)) if fits else []
                try:
                    with zeroed(model, group, units):
                        curve[width] = _divergence(model, batches, dense)
                finally:
                    restore(saved)
        found[group.name] = dict(sorted(curve.items()))
        update()
    return found


def _chooser(model, group: UnitGroup, scores: torch.Tensor, widths: list[int], batches, refit: dict | None):
    """width -> (units removed, the consumers' fits to re-fit with, or None)."""
    if refit is None or not reconstruction.refittable(model, group):
        return lambda width: (lowest(scores, width), None)
    fits = reconstruction.fits_of(model, model, group, batches, refit["ridge"])
    if refit["select"] != "reconstruction":
        return lambda width: (lowest(scores, width), fits)
    order = reconstruction.removal_order(fits, scores, group.size - min(widths))
    return lambda width: (order[: group.size - width], fits)


def _predictions(model, batches) -> list[torch.Tensor]:
    return [torch.log_softmax(model(b).float(), dim=1) for b in batches]


def _divergence(model, batches, dense) -> float:
    total, count = 0.0, 0
    for inputs, reference in zip(batches, dense):
        pruned = torch.log_softmax(model(inputs).float(), dim=1)
        total += float(torch.nn.functional.kl_div(pruned, reference, log_target=True, reduction="sum"))
        count += inputs.shape[0]
    return total / max(count, 1)


class PlanDivergence:
    """kept -> the divergence of the dense predictions on `batches` from those of the model pruned to `kept`
    (the lowest-scored units of each group removed, BatchNorm re-estimated on the same images); each plan
    measured once. `measured` counts the plans measured."""

    def __init__(self, model: torch.nn.Module, groups: list[UnitGroup], scores: dict[str, torch.Tensor],
                 batches: list[torch.Tensor]):  # fmt: skip
        self.model, self.groups, self.scores, self.batches = model.eval(), groups, scores, batches
        with torch.no_grad():
            self.dense = _predictions(model, batches)
        self.known: dict[tuple, float] = {}

    @property
    def measured(self) -> int:
        return len(self.known)

    def __call__(self, kept: dict[str, int]) -> float:
        key = tuple(sorted(kept.items()))
        if key not in self.known:
            self.known[key] = self._measure(kept)
        return self.known[key]

    def _measure(self, kept: dict[str, int]) -> float:
        pruned = clone_model(self.model)
        surgery.apply_removal(
            pruned, self.batches[0][:1], self.groups, removal_of(self.groups, self.scores, kept)
        )  # traces with autograd on
        surgery.recalibrate_batchnorm(pruned, ((b, None) for b in self.batches))
        with torch.no_grad():
            return _divergence(pruned, self.batches, self.dense)

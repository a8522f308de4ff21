"""How much accuracy each group's width costs, measured: per group and kept width, how far the model's
outputs on calibration images move from the dense ones (the KL divergence of the dense predictions
from the pruned) when only that group is cut to that width, its lowest-scored units first.
The units are zeroed in place instead of removed (pipeline.pruning.masks). The curves
are measured at a few widths per group (pipeline.allocators.sensitivity interpolates between them).

PlanLoss measures a whole plan instead: every group cut at once, the units removed and BatchNorm
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
IMAGES = 256  # calibration images the curves' divergence is averaged over
PLAN_IMAGES = 1024  # calibration images a whole plan's loss is measured on (PlanLoss)


def first_images(batches, labelled: bool, images: int = IMAGES) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
    """The first `images` of (inputs, labels) `batches`, and their labels where `labelled` (None where the
    images are synthetic, as in a run without data)."""
    inputs, labels, count = [], [], 0
    for batch, targets in batches:
        inputs.append(batch[: images - count])
        labels.append(targets[: inputs[-1].shape[0]])
        count += inputs[-1].shape[0]
        if count >= images:
            break
    return inputs, (labels if labelled else None)


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


def _cross_entropy(model, batches, labels) -> float:
    total = sum(
        float(torch.nn.functional.cross_entropy(model(b).float(), y.to(b.device), reduction="sum"))
        for b, y in zip(batches, labels)
    )
    return total / max(sum(b.shape[0] for b in batches), 1)


def _divergence(model, batches, dense) -> float:
    total, count = 0.0, 0
    for inputs, reference in zip(batches, dense):
        pruned = torch.log_softmax(model(inputs).float(), dim=1)
        total += float(torch.nn.functional.kl_div(pruned, reference, log_target=True, reduction="sum"))
        count += inputs.shape[0]
    return total / max(count, 1)


class PlanLoss:
    """kept -> the loss on `batches` of the model pruned to `kept` (the lowest-scored units of each group
    removed, BatchNorm re-estimated on the same images): the cross-entropy against `labels` where the images
    have them (a run's own data), else the KL divergence of the dense predictions from the pruned. Each plan
    measured once; `measured` counts them.

    Measured on up to PLAN_IMAGES images, not the curves' IMAGES: with BatchNorm re-estimated on only 256,
    a ResNet-20 plan 2.1 points less accurate than the uniform plan of its speed measured the lesser loss
    (by either measure), on 1024 the greater. Labels, where there are any, rank plans by their one-shot
    accuracy better: over 20 ResNet-56 plans at about 1.25x (two uniform plans, 18 with one stage-3 block
    cut further than one of them) the cross-entropy's rank correlation with the test accuracy was -0.79,
    the divergence's -0.63; at 256 images the divergence had a cut that cost 1.4 points moving the outputs less than the
    plan without it."""

    def __init__(self, model: torch.nn.Module, groups: list[UnitGroup], scores: dict[str, torch.Tensor],
                 batches: list[torch.Tensor], labels: list[torch.Tensor] | None = None):  # fmt: skip
        self.model, self.groups, self.scores, self.batches, self.labels = model.eval(), groups, scores, batches, labels
        with torch.no_grad():
            self.dense = _predictions(model, batches) if labels is None else None
        self.known: dict[tuple, float] = {}

    @property
    def measured(self) -> int:
        return len(self.known)

    @property
    def what(self) -> str:
        return (
            "cross-entropy on the labelled calibration images" if self.labels is not None else "divergence from the dense outputs"
        )

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
            if self.labels is None:
                return _divergence(pruned, self.batches, self.dense)
            return _cross_entropy(pruned, self.batches, self.labels)

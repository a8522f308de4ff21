"""Class-Aware Pruning (Jiang et al., DATE 2024, arXiv 2312.05875): prune the filters that matter to
few classes.

Per class c, unit k and position t, Theta = |a * dCE/da| (first-order Taylor, true labels). The
official code counts, per class, the fraction of images for which Theta > 1e-50 and scores a filter
by max_t sum_c of those fractions: a soft count in [0, C] of the classes it matters to ("code" mode,
used where the per-position counts fit in memory). Otherwise ("threshold" mode, the paper's
description): the class means of Theta, normalised by the layer's maximum per class, counted above
tau = 0.1, plus a small tie-break. Statistics are taken at the unit's post-activation output (the
inputs of its consumers) [INTERP: the code hooks conv outputs before BatchNorm]. Each layer keeps its
top units (per-layer top-n, as the code does)."""

from __future__ import annotations

import torch

from pipeline.pruning.surgery import UnitGroup
from pipeline.scorers.base import ScoreContext, Scorer, sum_per_unit

TAU = 0.1
TIE_BREAK = 1e-3


class ClassAwareScorer(Scorer):
    needs = ("class_taylor",)
    ranking = "uniform"

    def score_group(self, group: UnitGroup, ctx: ScoreContext) -> torch.Tensor:
        per_consumer = []
        for consumer in group.consumers:
            if consumer.depthwise:
                continue
            means = ctx.stats[f"class_taylor/{consumer.module}/mean"].double()[:, consumer.channels]
            per_class = torch.stack([self._per_unit(group, consumer, row, mean=False) for row in means])  # classes x units
            normalised = per_class / per_class.max(dim=1, keepdim=True).values.clamp_min(1e-300)
            firing = ctx.stats.get(f"class_taylor/{consumer.module}/firing")
            if firing is not None:
                # soft class count per channel: max over positions of the summed per-class frequencies
                channel_counts = firing.double().sum(0).max(dim=1).values[consumer.channels]
                counts = self._per_unit(group, consumer, channel_counts, mean=True)
            else:
                counts = (normalised > TAU).double().sum(0)
                ctx.notes.append(f"class-aware: {group.name} counted in threshold mode (per-position counts too large)")
            # ties (e.g. smooth activations, where every position "matters" for every class) are
            # broken by the classes' normalised Taylor importance
            per_consumer.append(counts + TIE_BREAK * normalised.sum(0))
        return torch.stack(per_consumer).mean(0)

    @staticmethod
    def _per_unit(group, consumer, channel_values: torch.Tensor, mean: bool) -> torch.Tensor:
        totals = sum_per_unit(group.size, consumer.units, channel_values)
        if not mean:
            return totals
        return totals / sum_per_unit(
            group.size, consumer.units, torch.ones(len(consumer.units), device=channel_values.device)
        ).clamp_min(1)

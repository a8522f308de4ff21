"""SNIP (Lee, Ajanthan, Torr, ICLR 2019) in structured form: a unit's connection sensitivity is the
gradient of the loss with respect to a multiplicative gate at 1 on its output, i.e.
|sum over samples and positions of a * dL/da| (signs summed before the absolute value), accumulated
over the calibration batches. Scores are divided by their layer's mean and ranked globally.

--snip-at-init scores a freshly initialised copy of the architecture, as the paper does before
training, so the two can be compared; by default the trained model is scored (first-order saliency
of removing the unit)."""

from __future__ import annotations

import dataclasses

import torch

from pipeline.pruning.surgery import UnitGroup
from pipeline.scorers.base import ScoreContext, Scorer, mean_normalised, per_unit_from_consumers
from pipeline.statistics import calibration


class SnipScorer(Scorer):
    needs = ("input_grads",)
    ranking = "global"
    config_keys = ("snip_at_init",)

    def score(self, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        if ctx.options.snip_at_init:
            fresh = ctx.fresh_model().to(next(ctx.model.parameters()).device)  # where the batches are
            consumers = sorted({c.module for g in ctx.groups for c in g.consumers})
            stats = calibration.collect(fresh, ctx.batches(), consumers, self.needs)
            ctx = dataclasses.replace(ctx, model=fresh, stats=stats)
            ctx.notes.append("snip: scored at initialisation (a freshly initialised copy of the architecture)")
        return super().score(ctx)

    def score_group(self, group: UnitGroup, ctx: ScoreContext) -> torch.Tensor:
        return per_unit_from_consumers(group, ctx.stats, "input_grads/{module}/gate").abs()

    def normalise(self, scores: torch.Tensor) -> torch.Tensor:
        return mean_normalised(scores)

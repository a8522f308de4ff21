"""Weight-magnitude baselines: the L1 or L2 norm of every weight that goes with a unit (its
filter, its BatchNorm scale and shift, its consumers' input slices), averaged over those layers."""

from __future__ import annotations

import torch

from pipeline.pruning.surgery import UnitGroup
from pipeline.scorers.base import ScoreContext, Scorer, per_unit_from_params


class L1Scorer(Scorer):
    def score_group(self, group: UnitGroup, ctx: ScoreContext) -> torch.Tensor:
        return per_unit_from_params(ctx.model, group, torch.abs)


class L2Scorer(Scorer):
    def score_group(self, group: UnitGroup, ctx: ScoreContext) -> torch.Tensor:
        return per_unit_from_params(ctx.model, group, torch.square).sqrt()

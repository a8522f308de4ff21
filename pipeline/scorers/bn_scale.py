"""Network slimming's criterion: |gamma| of the BatchNorm that normalises each channel. Groups with
no BatchNorm (MLP neurons, attention heads) fall back to L1 and say so."""

from __future__ import annotations

import torch
import torch.nn as nn

from pipeline.pruning.surgery import UnitGroup
from pipeline.scorers.base import ScoreContext, Scorer, per_unit_from_params, sum_per_unit


class BNScaleScorer(Scorer):
    def score_group(self, group: UnitGroup, ctx: ScoreContext) -> torch.Tensor:
        gammas = [
            p
            for p in group.params
            if p.param == "weight" and isinstance(ctx.model.get_submodule(p.module), nn.modules.batchnorm._BatchNorm)
        ]
        if not gammas:
            ctx.notes.append(f"bn-scale: {group.name} has no BatchNorm, scored by L1 instead")
            return per_unit_from_params(ctx.model, group, torch.abs)
        scores = [
            sum_per_unit(group.size, piece.units, ctx.model.get_submodule(piece.module).weight.detach().abs()[piece.positions])
            for piece in gammas
        ]
        return torch.stack(scores).mean(0)

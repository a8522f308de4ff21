"""First-order Taylor importance (Molchanov et al. 2019): |w * mean dL/dw| summed over each unit's
weights, averaged over the group's coupled layers. Gradients come from calibration batches."""

from __future__ import annotations

import torch

from pipeline.core.device import to_float64
from pipeline.pruning.surgery import UnitGroup
from pipeline.scorers.base import ScoreContext, Scorer, per_unit_from_params
from pipeline.statistics.calibration import WEIGHT_GRADS


class TaylorScorer(Scorer):
    needs = (WEIGHT_GRADS,)

    def score_group(self, group: UnitGroup, ctx: ScoreContext) -> torch.Tensor:
        products = {}
        for piece in group.params:
            name = f"{piece.module}.{piece.param}"
            weight = to_float64(getattr(ctx.model.get_submodule(piece.module), piece.param).detach())
            products[name] = weight * ctx.stats[f"{WEIGHT_GRADS}/{name}"].to(weight.device)
        return per_unit_from_params(ctx.model, group, torch.abs, tensors=products)

"""What a scorer is, and helpers to turn per-weight values into per-unit scores."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from pipeline.surgery import UnitGroup


@dataclass
class ScoreContext:
    """Everything a scorer may read: the dense model, its groups and the calibration statistics."""

    model: nn.Module
    groups: list[UnitGroup]
    stats: dict[str, torch.Tensor]
    seed: int = 0
    notes: list[str] = field(default_factory=list)  # scorer remarks for the report


class Scorer:
    """Subclasses set `needs` (calibration collectors, see pipeline.calibration) and implement
    `score_group`. Higher scores are more important."""

    needs: tuple[str, ...] = ()

    def __init__(self, **options):
        self.options = options

    def score(self, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        return {g.name: self.score_group(g, ctx).double() for g in ctx.groups}

    def score_group(self, group: UnitGroup, ctx: ScoreContext) -> torch.Tensor:
        raise NotImplementedError


def per_unit_from_params(model: nn.Module, group: UnitGroup, reduce, only_types: tuple[type, ...] | None = None,
                         tensors: dict[str, torch.Tensor] | None = None) -> torch.Tensor | None:
    """Mean over the group's parameter slices of `reduce(values of one unit's positions)` summed per
    unit. `tensors` replaces parameters by other tensors of the same name (gradients, products)."""
    per_slice = []
    for piece in group.params:
        module = model.get_submodule(piece.module)
        if only_types is not None and not isinstance(module, only_types):
            continue
        full_name = f"{piece.module}.{piece.param}"
        tensor = tensors[full_name] if tensors is not None else getattr(module, piece.param)
        values = tensor.detach().double().movedim(piece.dim, 0)[piece.positions]
        values = reduce(values).reshape(len(piece.positions), -1).sum(1)
        unit_scores = torch.zeros(group.size, dtype=torch.float64)
        unit_scores.index_add_(0, torch.tensor(piece.units), values)
        per_slice.append(unit_scores)
    if not per_slice:
        return None
    return torch.stack(per_slice).mean(0)

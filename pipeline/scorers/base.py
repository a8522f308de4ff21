"""What a scorer is, and helpers to turn per-weight and per-channel values into per-unit scores."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from pipeline.core.device import to_float64
from pipeline.pruning.surgery import UnitGroup


@dataclass(frozen=True, kw_only=True)
class ScorerOptions:
    """The run's settings that criteria read (resolved: no "auto" left)."""

    snip_at_init: bool = False
    compensate: str = "none"
    max_acc_drop: float = 0.005
    max_unit_ratio: float = 0.9
    bn_recalibration: bool = True


@dataclass(kw_only=True)
class ScoreContext:
    """Everything a scorer may read: the dense model, its groups and the calibration statistics. The
    model, the batches and `example` share one device; `stats` are on the CPU, as loaded."""

    model: nn.Module
    groups: list[UnitGroup]
    stats: dict[str, torch.Tensor]
    seed: int = 0
    notes: list[str] = field(default_factory=list)  # scorer remarks for the report
    options: ScorerOptions = field(default_factory=ScorerOptions)
    batches: Callable[[], Iterable] | None = None  # calibration batches, for scorers that run the model
    fresh_model: Callable[[], nn.Module] | None = None  # a newly initialised copy of the architecture
    example: torch.Tensor | None = None  # one input, for scorers that trace the model
    # filled by criteria that choose their own budget (CoSeP, C-SWAP): units kept per group
    budget: dict[str, int] = field(default_factory=dict)
    budget_details: dict[str, dict] = field(default_factory=dict)  # per group, why that count (k, ...)
    # extra per-unit columns for scores.csv: {column: {group: values}}
    evidence: dict[str, dict[str, list]] = field(default_factory=dict)

    def add_evidence(self, group: str, **columns: list) -> None:
        for column, values in columns.items():
            self.evidence.setdefault(column, {})[group] = list(values)


class Scorer:
    """Subclasses set `needs` (calibration collectors, see pipeline.statistics.calibration) and implement
    `score_group`. Higher scores are more important.

    `score` returns CPU float64 tensors, wherever the model computes.

    `kinds` limits the unit kinds scored (others are kept whole); `ranking` is how the budget is
    spread: "uniform" (the same fraction of every group) or "global" (one threshold over all units,
    on scores made comparable across layers by `normalise`)."""

    needs: tuple[str, ...] = ()
    kinds: tuple[str, ...] | None = None
    ranking: str = "uniform"
    chooses_budget: bool = False  # fills ScoreContext.budget: used without --ratio/--macs-reduction
    config_keys: tuple[str, ...] = ()  # RunConfig fields its scores depend on (re-scored when they change)

    def score(self, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        scores = {}
        for group in ctx.groups:
            if self.kinds is not None and group.kind not in self.kinds:
                continue
            scores[group.name] = self.normalise(self.score_group(group, ctx).cpu().double())
        return scores

    def score_group(self, group: UnitGroup, ctx: ScoreContext) -> torch.Tensor:
        raise NotImplementedError

    def ranking_for(self, groups: list[UnitGroup]) -> str:
        """How this criterion spreads the budget over these groups (see `ranking`)."""
        return self.ranking

    def normalise(self, scores: torch.Tensor) -> torch.Tensor:
        return scores


def sum_per_unit(size: int, units: list[int], values: torch.Tensor) -> torch.Tensor:
    """Values given per channel (or per weight row) summed into the unit each belongs to (float64, on
    the values' device)."""
    values = to_float64(values)
    return torch.zeros(size, dtype=torch.float64, device=values.device).index_add_(
        0, torch.tensor(units, device=values.device), values
    )


def mean_normalised(scores: torch.Tensor) -> torch.Tensor:
    """Scores divided by their layer's mean, so one global threshold treats layers alike."""
    mean = scores.abs().mean()
    return scores / mean if mean > 0 else scores


def per_unit_from_params(
    model: nn.Module,
    group: UnitGroup,
    reduce,
    only_types: tuple[type, ...] | None = None,
    tensors: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor | None:
    """Mean over the group's parameter slices of `reduce(values of one unit's positions)` summed per
    unit. `tensors` replaces parameters by other tensors of the same name (gradients, products)."""
    per_slice = []
    for piece in group.params:
        module = model.get_submodule(piece.module)
        if only_types is not None and not isinstance(module, only_types):
            continue
        full_name = f"{piece.module}.{piece.param}"
        tensor = tensors[full_name] if tensors is not None else getattr(module, piece.param)
        values = to_float64(tensor.detach()).movedim(piece.dim, 0)[piece.positions]
        values = reduce(values).reshape(len(piece.positions), -1).sum(1)
        per_slice.append(sum_per_unit(group.size, piece.units, values))
    if not per_slice:
        return None
    return torch.stack(per_slice).mean(0)


def per_unit_from_consumers(group: UnitGroup, stats: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    """A per-input-channel statistic ("<need>/<module>/<stat>" with module = each consumer) summed
    over each unit's channels, averaged over the consumers that are not removed with the group
    (depthwise convs are). `key` is "<need>/{module}/<stat>"."""
    per_consumer = []
    for consumer in group.consumers:
        if consumer.depthwise:
            continue
        values = stats[key.format(module=consumer.module)][consumer.channels]
        per_consumer.append(sum_per_unit(group.size, consumer.units, values))
    if not per_consumer:
        raise ValueError(f"{group.name} has no consumer to read statistics at")
    return torch.stack(per_consumer).mean(0)

"""--select reconstruction: per group, the units whose removal the consumers' least-squares re-fit
(pipeline.pruning.compensation, lstsq) misses least, instead of the lowest-scored ones.

Groups are taken in forward order on a working copy where the groups already chosen are switched off
(pipeline.pruning.masks) and every layer before the group's consumers is re-fitted as the lstsq re-fit
will re-fit it, so each group is chosen on the inputs the pruned model will really give it; the walk
goes on to the last layer, so the working copy ends re-fitted and the re-fit need not run again. For one group, each consumer's normal equations on calibration data (Gram
G = X^T X of its input rows, cross term X^T Y with the dense model's output Y) give the re-fit's error
for any kept set; units are removed greedily, one at a time, the one whose removal raises the summed
error least (optimal-brain-surgeon block updates of the inverse Gram and of the re-fitted weights, in
closed form: dE = tr(W_B^T (P_BB)^-1 W_B), P' = P_RR - P_RB P_BB^-1 P_BR), the scorer's order breaking
ties. The greedy choice is kept only where its error is below that of the scorer's own choice. A
consumer that feeds a residual join is fitted to the dense join (pipeline.pruning.residual), as the
re-fit that follows will fit it.

Greedy backward elimination over LASSO (He et al. 2017): no penalty to tune against an exact count, and
each step is exact for the re-fit that follows. Groups with a consumer that cannot be re-fitted (a
depthwise or grouped conv, which passes channels through) keep the scorer's choice."""

from __future__ import annotations

import torch
import torch.nn as nn

from pipeline.pruning.compensation import (
    _dense_outputs,
    _kept_outputs,
    diagonal_mean,
    fit_layer,
    normal_equations,
    output_count,
    refitted_from,
    write_into,
)
from pipeline.pruning.masks import zero_units
from pipeline.pruning.residual import Joins
from pipeline.pruning.surgery import UnitGroup, execution_order

TIE = 1e-6


class Fit:
    """One consumer's normal equations, with the blocks of Gram columns each unit of the group feeds."""

    def __init__(self, gram: torch.Tensor, cross: torch.Tensor, blocks: dict[int, list[int]], ridge: float):
        self.gram, self.cross, self.blocks = gram, cross, blocks
        self.ridge = ridge * float(diagonal_mean(gram))

    def error(self, removed: set[int]) -> float:
        """The re-fit's error (up to a constant) with `removed` units' columns gone."""
        kept = self._kept_columns(removed)
        weights = self._solve(kept)
        return -float((self.cross[kept] * weights).sum())

    def weights(self, removed: set[int]) -> tuple[list[int], torch.Tensor]:
        kept = self._kept_columns(removed)
        return kept, self._solve(kept)

    def _kept_columns(self, removed: set[int]) -> list[int]:
        gone = {c for u in removed for c in self.blocks.get(u, [])}
        return [c for c in range(self.gram.shape[0]) if c not in gone]

    def _solve(self, kept: list[int]) -> torch.Tensor:
        index = torch.tensor(kept, device=self.gram.device)
        gram = self.gram[index][:, index]
        gram = gram + self.ridge * torch.eye(len(kept), dtype=gram.dtype, device=gram.device)
        return torch.linalg.solve(gram, self.cross[index])


def greedy_removal(fits: list[Fit], scores: torch.Tensor, count: int) -> list[int]:
    """`count` units removed one at a time, each the one whose removal raises the summed re-fit error least."""
    return sorted(removal_order(fits, scores, count))


def removal_order(fits: list[Fit], scores: torch.Tensor, count: int) -> list[int]:
    """The first `count` units in the order greedy removal takes them (its first k are its choice for k)."""
    size = scores.numel()
    rank = {u: r for r, u in enumerate(sorted(range(size), key=lambda u: (float(scores[u]), -u)))}
    states = [_State(fit) for fit in fits]
    removed: list[int] = []
    for _ in range(count):
        candidates = [u for u in range(size) if u not in removed]
        rises = torch.zeros(len(candidates), dtype=torch.float64)
        for state in states:
            rises += state.rises(candidates)
        # the scorer breaks ties: rises within TIE of the least (relative to the largest) count as equal
        least, scale = float(rises.min()), float(rises.abs().max()) or 1.0
        tied = [u for u, rise in zip(candidates, rises.tolist()) if rise <= least + TIE * scale]
        chosen = min(tied, key=rank.__getitem__)
        for state in states:
            state.remove(chosen)
        removed.append(chosen)
    return removed


class _State:
    """The inverse ridge Gram P over the kept columns and the re-fitted weights W = P X^T Y."""

    def __init__(self, fit: Fit):
        gram = fit.gram + fit.ridge * torch.eye(fit.gram.shape[0], dtype=fit.gram.dtype, device=fit.gram.device)
        self.inverse = torch.linalg.inv(gram)
        self.weights = self.inverse @ fit.cross
        self.columns = list(range(fit.gram.shape[0]))  # original column of each row of `inverse`
        self.blocks = fit.blocks

    def _positions(self, unit: int, where: dict[int, int] | None = None) -> list[int]:
        where = where if where is not None else {c: i for i, c in enumerate(self.columns)}
        return [where[c] for c in self.blocks.get(unit, []) if c in where]

    def rises(self, candidates: list[int]) -> torch.Tensor:
        out = torch.zeros(len(candidates), dtype=torch.float64)
        where = {c: i for i, c in enumerate(self.columns)}
        for i, unit in enumerate(candidates):
            block = self._positions(unit, where)
            if not block:
                continue
            index = torch.tensor(block, device=self.inverse.device)
            p_bb, w_b = self.inverse[index][:, index], self.weights[index]
            out[i] = float((w_b * torch.linalg.solve(p_bb, w_b)).sum())
        return out

    def remove(self, unit: int) -> None:
        block = self._positions(unit)
        if not block:
            return
        keep = [i for i in range(len(self.columns)) if i not in set(block)]
        b, r = torch.tensor(block, device=self.inverse.device), torch.tensor(keep, device=self.inverse.device)
        p_rb, p_bb = self.inverse[r][:, b], self.inverse[b][:, b]
        correction = p_rb @ torch.linalg.inv(p_bb)
        self.weights = self.weights[r] - correction @ self.weights[b]
        self.inverse = self.inverse[r][:, r] - correction @ self.inverse[b][:, r]
        self.columns = [self.columns[i] for i in keep]


def refittable(model: nn.Module, group: UnitGroup) -> bool:
    """Whether every consumer of the group mixes its inputs (a dense conv or a linear layer)."""
    for consumer in group.consumers:
        layer = model.get_submodule(consumer.module)
        if consumer.depthwise or (isinstance(layer, nn.Conv2d) and layer.groups != 1):
            return False
    return bool(group.consumers)


@torch.no_grad()
def select(
    dense: nn.Module,
    working: nn.Module,
    groups: list[UnitGroup],
    scores: dict[str, torch.Tensor],
    kept: dict[str, int],
    batches: list[torch.Tensor],
    example: torch.Tensor,
    ridge: float,
    fallback,
    update=lambda n=1: None,
) -> tuple[dict[str, list[int]], dict[str, dict]]:
    """({group: units to remove}, {group: errors of both choices}); `working` (a copy of `dense`) ends with
    the chosen units switched off and every layer re-fitted as the lstsq re-fit re-fits the pruned model
    (the walk is that re-fit). `fallback(group)`: the scorer's choice."""
    dense.eval(), working.eval()
    layers = execution_order(dense, example)
    order = {name: i for i, name in enumerate(layers)}
    pending = [g for g in groups if g.name in scores and kept.get(g.name, g.size) < g.size]
    first = {g.name: min((order.get(c.module, len(order)) for c in g.consumers), default=len(order)) for g in pending}
    pending.sort(key=lambda g: first[g.name])
    walk = refitted_from(working, pending, layers)
    removal, errors = {}, {}
    cached = _dense_targets(dense, sorted({c.module for g in pending for c in g.consumers} | set(walk)), batches)
    joins = Joins(dense, working)
    for group in pending:
        while walk and order[walk[0]] < first[group.name]:  # the layers before, re-fitted as lstsq will
            _refit_layer(dense, working, walk.pop(0), groups, removal, batches, ridge, cached, joins)
        own = fallback(group)
        if refittable(working, group):
            fits = fits_of(dense, working, group, batches, ridge, cached, joins)
            greedy = greedy_removal(fits, scores[group.name], group.size - kept[group.name])
            mine, theirs = (sum(f.error(set(units)) for f in fits) for units in (greedy, own))
            removal[group.name] = greedy if mine <= theirs else own
            errors[group.name] = {"reconstruction": mine, "scores": theirs}
            refit(working, group, fits, set(removal[group.name]))
        else:
            removal[group.name] = own
        zero_units(working, group, removal[group.name])
        update()
    for name in walk:  # the layers after the last group's first consumer
        _refit_layer(dense, working, name, groups, removal, batches, ridge, cached, joins)
    return removal, errors


def _refit_layer(dense, working, name: str, groups, removal: dict, batches, ridge: float, cached, joins) -> None:
    """Layer `name` of `working` re-fitted to the dense outputs from its inputs in `working`; the output
    channels of units already removed stay off."""
    layer = working.get_submodule(name)
    outputs = _kept_outputs(groups, removal, name, output_count(layer))
    targets = None if cached is None else [rows[:, outputs] for rows in cached[name]]
    write_into(layer, fit_layer(dense, working, name, list(batches), ridge, targets, outputs, joins), outputs)


def fits_of(
    dense: nn.Module, working: nn.Module, group: UnitGroup, batches, ridge: float, cached=None, joins: Joins | None = None
) -> list[Fit]:
    """The normal equations of each of the group's consumers (inputs in `working`, outputs in `dense`;
    `cached`: the dense outputs' sampled rows per consumer and batch, where they were kept; `joins`:
    the residual joins whose other branch's error the consumers make up for)."""
    return [_fit(dense, working, consumer, batches, ridge, cached, joins) for consumer in group.consumers]


def _dense_targets(dense: nn.Module, names: list[str], batches) -> dict | None:
    """The layers' dense output rows from one pass (None when they would not fit in memory)."""
    if not names:
        return None
    width = {name: list(range(output_count(dense.get_submodule(name)))) for name in names}
    return _dense_outputs(dense, names, [(b, None) for b in batches], width)


def refitted(working: nn.Module, group: UnitGroup, fits: list[Fit], removed: set[int]) -> list:
    """Re-fit the consumers for `removed` (as refit() does); returns what masks.restore() puts back."""
    saved = []
    for consumer in group.consumers:
        layer = working.get_submodule(consumer.module)
        for parameter in (layer.weight, layer.bias):
            if parameter is not None:
                every = torch.arange(parameter.shape[0], device=parameter.device)
                saved.append((parameter, 0, every, parameter.data.clone()))
    refit(working, group, fits, removed)
    return saved


def _fit(dense: nn.Module, working: nn.Module, consumer, batches, ridge: float, cached=None, joins=None) -> Fit:
    """The consumer's normal equations: its inputs in `working`, its outputs in `dense`, on sampled rows."""
    layer = working.get_submodule(consumer.module)
    targets = cached.get(consumer.module) if cached is not None else None
    gram, cross = normal_equations(dense, working, consumer.module, list(batches), targets, joins=joins)
    per_channel = layer.kernel_size[0] * layer.kernel_size[1] if isinstance(layer, nn.Conv2d) else 1
    blocks: dict[int, list[int]] = {}
    for channel, unit in zip(consumer.channels, consumer.units):
        blocks.setdefault(unit, []).extend(range(channel * per_channel, (channel + 1) * per_channel))
    return Fit(gram, cross, blocks, ridge)


def refit(working: nn.Module, group: UnitGroup, fits: list[Fit], removed: set[int]) -> None:
    """Each consumer's weights re-fitted to the kept columns (the removed ones zero), as the lstsq re-fit will."""
    for consumer, fit in zip(group.consumers, fits):
        layer = working.get_submodule(consumer.module)
        columns, solution = fit.weights(removed)
        full = torch.zeros(fit.gram.shape[0], solution.shape[1], dtype=solution.dtype, device=solution.device)
        full[torch.tensor(columns, device=full.device)] = solution
        full = full.T
        if layer.bias is not None:
            layer.bias.copy_(full[:, -1].to(layer.bias.dtype))
            full = full[:, :-1]
        layer.weight.copy_(full.reshape(layer.weight.shape).to(layer.weight.dtype))

"""Units switched off in place: a unit whose producing weights and bias are zero outputs zero after any
activation with f(0) = 0 (ReLU, GELU, SiLU, Hardswish, ReLU6), so every consumer reads what it would read
with the unit removed, for a fraction of surgery's cost (tested against surgery on every tiny model)."""

from __future__ import annotations

from contextlib import contextmanager

import torch

from pipeline.pruning.surgery import UnitGroup


def zero_units(model: torch.nn.Module, group: UnitGroup, units: list[int]) -> list:
    """Zero the group's producing parameters of `units`; returns what restore() puts back."""
    chosen, saved = set(units), []
    for piece in group.params:
        parameter = model.get_submodule(piece.module)._parameters.get(piece.param)
        positions = [p for p, u in zip(piece.positions, piece.units) if u in chosen]
        if parameter is None or not positions:
            continue
        index = torch.tensor(positions, device=parameter.device)
        saved.append((parameter, piece.dim, index, parameter.detach().index_select(piece.dim, index)))
        with torch.no_grad():  # written in place on the parameter itself: its version counts the change
            parameter.index_fill_(piece.dim, index, 0.0)
    return saved


@torch.no_grad()
def restore(saved: list) -> None:
    for parameter, dim, index, values in reversed(saved):
        parameter.index_copy_(dim, index, values)


@contextmanager
def zeroed(model: torch.nn.Module, group: UnitGroup, units: list[int]):
    """`units` of `group` switched off while inside, restored after."""
    saved = []
    try:
        saved = zero_units(model, group, units)
        yield
    finally:
        restore(saved)

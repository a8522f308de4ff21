"""Interventions on units without editing weights: a unit's output is replaced (by zero, or by its
mean) where its consumers read it, which equals removing the unit (with mean-shift compensation
when the mean is used). Used by C-SWAP (pipeline.scorers.cswap).

Two kinds: units removed for every row of a batch (`remove`), and one intervention per block of rows
(`run(..., units=[...])`: the samples are repeated once per unit, and block j has unit j replaced),
so many interventions share one forward pass.

Prefix caching: the modules that finish before the first intervened consumer starts give the same
outputs for every intervention, so `Prefix` computes them once per set of samples and the forward
passes that follow return them without running those modules."""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn as nn

from pipeline.core.device import rows_that_fit
from pipeline.pruning.surgery import UnitGroup

CACHE_BYTES = 2 << 30  # prefix outputs kept in host memory; above this they are recomputed per pass


class _Stop(Exception):
    """Raised at the first intervened consumer: the rest of the forward pass is not needed."""


class Prefix:
    """The outputs of the outermost modules that complete before any of `before` starts, for `inputs`."""

    def __init__(self, model: nn.Module, inputs: torch.Tensor, before: set[str]):
        self.model, self.inputs, self.before = model, inputs, before
        self.modules = self._skippable(inputs[:1])
        self.outputs = self._compute(inputs) if self._fits(inputs) else None

    def _skippable(self, example: torch.Tensor) -> list[str]:
        """Outermost modules called once and finished before the first module of `before` starts."""
        events: list[tuple[str, str]] = []
        calls: dict[str, int] = {}
        handles = []
        for name, module in self.model.named_modules():
            if not name:
                continue
            handles.append(module.register_forward_pre_hook(lambda m, a, name=name: events.append(("start", name))))
            handles.append(module.register_forward_hook(lambda m, a, o, name=name: events.append(("end", name))))
        try:
            with torch.no_grad():
                self.model(example)
        finally:
            for handle in handles:
                handle.remove()
        for kind, name in events:
            if kind == "start":
                calls[name] = calls.get(name, 0) + 1
        first = next((i for i, (kind, name) in enumerate(events) if kind == "start" and name in self.before), len(events))
        done = {name for kind, name in events[:first] if kind == "end" and calls[name] == 1}
        return [name for name in done if name.rpartition(".")[0] not in done]

    def _fits(self, inputs: torch.Tensor) -> bool:
        one = self._compute(inputs[:1])
        per_sample = sum(_nbytes(v) for v in one.values())
        return per_sample == 0 or inputs.shape[0] <= rows_that_fit(inputs.device, per_sample, CACHE_BYTES // per_sample)

    def _compute(self, inputs: torch.Tensor) -> dict[str, object]:
        outputs: dict[str, object] = {}
        handles = [
            self.model.get_submodule(n).register_forward_hook(lambda m, a, o, n=n: outputs.__setitem__(n, o))
            for n in self.modules
        ]

        def stop(module, args):
            raise _Stop

        handles += [m.register_forward_pre_hook(stop) for n, m in self.model.named_modules() if n in self.before]
        try:
            with torch.no_grad():
                self.model(inputs)
        except _Stop:
            pass
        finally:
            for handle in handles:
                handle.remove()
        return outputs

    @contextmanager
    def skipping(self, repeats: int, rows: slice | None = None):
        """While active, the cached modules return their outputs (repeated `repeats` times) unrun."""
        outputs = self.outputs if self.outputs is not None else self._compute(self.inputs[rows] if rows else self.inputs)
        if rows is not None and self.outputs is not None:
            outputs = {n: _rows(v, rows) for n, v in outputs.items()}
        patched = []
        try:
            for name in self.modules:
                module = self.model.get_submodule(name)
                module.forward = lambda *a, _v=outputs[name], **k: _repeat(_v, repeats)
                patched.append(module)
            yield
        finally:
            for module in patched:
                del module.forward


class Intervener:
    """Masks units at their consumers' inputs: removed units for every row, and one unit per block of
    rows during `run`. `fill` maps a consumer to the per-channel value a masked channel takes (its
    calibration mean, for mean-shift compensation); zero where absent."""

    def __init__(self, model: nn.Module, groups: list[UnitGroup], fill: dict[str, torch.Tensor] | None = None):
        self.model = model.eval()
        self.groups = {g.name: g for g in groups}
        self.fill = fill or {}
        self.removed: dict[str, set[int]] = {}
        self._rows: tuple[UnitGroup, list[int], int] | None = None  # (group, unit per block, rows per block)
        consumers = sorted({c.module for g in groups for c in g.consumers if not c.depthwise})
        self._handles = [model.get_submodule(name).register_forward_pre_hook(self._hook(name)) for name in consumers]

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def consumers(self, group_names) -> set[str]:
        return {c.module for name in group_names for c in self.groups[name].consumers if not c.depthwise}

    def remove(self, group: str, units) -> None:
        self.removed.setdefault(group, set()).update(int(u) for u in units)

    def restore(self, group: str, units) -> None:
        self.removed.get(group, set()).difference_update(int(u) for u in units)

    def prefix(self, inputs: torch.Tensor, intervened: list[str]) -> Prefix:
        """A prefix cache valid while only `intervened` groups (and those already removed) are masked."""
        masked = set(intervened) | {g for g, units in self.removed.items() if units}
        return Prefix(self.model, inputs, self.consumers(masked))

    def logits(
        self, prefix: Prefix, group: str | None = None, units: list[int] | None = None, rows: slice | None = None
    ) -> torch.Tensor:
        """Logits of the prefix's samples (or `rows` of them); with `units`, once per unit, block j
        with `units[j]` of `group` masked: shape (len(units) * samples, classes)."""
        inputs = prefix.inputs[rows] if rows is not None else prefix.inputs
        repeats = len(units) if units else 1
        self._rows = (self.groups[group], list(units), inputs.shape[0]) if units else None
        try:
            with prefix.skipping(repeats, rows), torch.no_grad():
                return self.model(inputs.repeat(repeats, *([1] * (inputs.dim() - 1))))
        finally:
            self._rows = None

    def _hook(self, module_name: str):
        def hook(module, args):
            x = args[0]
            channel_dim = 1 if isinstance(module, nn.Conv2d) else x.dim() - 1
            keep = torch.ones(x.shape[channel_dim], dtype=x.dtype, device=x.device)
            for name, units in self.removed.items():
                for consumer in self.groups[name].consumers:
                    if consumer.module == module_name and units:
                        keep[consumer.channels_of(units)] = 0
            row_keep = None
            if self._rows is not None:
                group, block_units, per_block = self._rows
                for consumer in group.consumers:
                    if consumer.module == module_name:
                        row_keep = keep.repeat(len(block_units), 1)
                        for j, unit in enumerate(block_units):
                            row_keep[j, consumer.channels_of({unit})] = 0
                        row_keep = row_keep.repeat_interleave(per_block, 0)
            if row_keep is None and bool(keep.all()):
                return None
            mask = row_keep if row_keep is not None else keep[None]
            shape = [mask.shape[0]] + [1] * (x.dim() - 1)
            shape[channel_dim] = mask.shape[1]
            mask = mask.reshape(shape)
            fill = self.fill.get(module_name)
            if fill is None:
                return (x * mask, *args[1:])
            fill_shape = [1] * x.dim()
            fill_shape[channel_dim] = -1
            return (x * mask + (1 - mask) * fill.to(x.device, x.dtype).reshape(fill_shape), *args[1:])

        return hook


def _nbytes(value) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    return 0


def _rows(value, rows: slice):
    if isinstance(value, torch.Tensor):
        return value[rows]
    if isinstance(value, tuple):
        return tuple(_rows(v, rows) for v in value)
    return value


def _repeat(value, repeats: int):
    """A copy, so that in-place operations after the prefix never change the cache."""
    if isinstance(value, torch.Tensor):
        return value.repeat(repeats, *([1] * (value.dim() - 1)))
    if isinstance(value, tuple):
        return tuple(_repeat(v, repeats) for v in value)
    return value

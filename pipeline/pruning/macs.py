"""Multiply-accumulate counts: measured by hooks on a model, and estimated for a candidate removal
(so the budget search never has to prune a copy per step)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from pipeline.pruning.heads import head_dim, is_head_attention
from pipeline.pruning.surgery import UnitGroup


def per_module_macs(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """MACs of each conv, linear and attention product for one sample (batch 1)."""
    macs: dict[str, int] = {}
    handles = []

    def conv_hook(name):
        def hook(module: nn.Conv2d, inputs, output):
            per_output = (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1]
            macs[name] = macs.get(name, 0) + output[0].numel() * per_output

        return hook

    def linear_hook(name):
        def hook(module: nn.Linear, inputs, output):
            macs[name] = macs.get(name, 0) + output[0].numel() * module.in_features

        return hook

    def attention_hook(name):
        def hook(module: nn.Module, inputs, output):
            # q @ k^T and weights @ v over the tokens of one sequence (or window)
            if inputs and isinstance(inputs[0], torch.Tensor) and inputs[0].dim() >= 3:
                tokens = inputs[0].shape[-2] if inputs[0].dim() == 3 else inputs[0].shape[1:-1].numel()
                macs[name] = macs.get(name, 0) + 2 * module.num_heads * tokens * tokens * head_dim(module)

        return hook

    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook(name)))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook(name)))
        elif is_head_attention(module):
            handles.append(module.register_forward_hook(attention_hook(name)))
    try:
        with torch.no_grad():
            model(example[:1])
    finally:
        for handle in handles:
            handle.remove()
    return macs


def widths(model: nn.Module, name: str) -> dict:
    """A conv or linear module's output width, and whether it is depthwise (for the per-layer latency table)."""
    module = model.get_submodule(name)
    out = getattr(module, "out_channels", None) or getattr(module, "out_features", None)
    depthwise = isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels == module.out_channels
    return {"out": out, "depthwise": depthwise}


def count(model: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    """(MACs for one sample, parameter count)."""
    return sum(per_module_macs(model, example).values()), sum(p.numel() for p in model.parameters())


@dataclass
class LayerGroups:
    """Which groups change one conv, linear or attention module's widths."""

    out_group: str | None  # the group whose kept fraction scales this layer's outputs
    in_groups: list[tuple[str, float]]  # (group, input channels per unit) scaling its inputs
    in_total: int


def layer_groups(model: nn.Module, names, groups: list[UnitGroup]) -> dict[str, LayerGroups]:
    """For each module name in `names`, the groups that set its output and input widths."""
    found = {}
    for name in names:
        module = model.get_submodule(name)
        out_group, in_groups = None, []
        for group in groups:
            if name in group.producers or (group.kind == "head" and name == group.name):
                out_group = group.name
            for consumer in group.consumers:
                if consumer.module == name and consumer.depthwise:
                    out_group = group.name
                elif consumer.module == name:
                    in_groups.append((group.name, len(consumer.channels) / group.size))
        in_total = getattr(module, "in_channels", None) or getattr(module, "in_features", 1)
        found[name] = LayerGroups(out_group, in_groups, in_total)
    return found


def kept_inputs(layer: LayerGroups, sizes: dict[str, int], kept: dict[str, int]) -> float:
    """The input channels a layer keeps for these kept counts."""
    removed = sum((sizes[g] - kept.get(g, sizes[g])) * per_unit for g, per_unit in layer.in_groups)
    return max(0.0, layer.in_total - removed)


class MacsEstimator:
    """dense MACs and the MACs left for any kept-unit counts, from the group structure."""

    def __init__(self, model: nn.Module, example: torch.Tensor, groups: list[UnitGroup]):
        self.sizes = {g.name: g.size for g in groups}
        self.macs = per_module_macs(model, example)
        self.dense = sum(self.macs.values())
        self.layers = layer_groups(model, self.macs, groups)

    def estimate(self, kept: dict[str, int]) -> int:
        return int(round(self.carried({g: k / self.sizes[g] for g, k in kept.items() if g in self.sizes})))

    def carried(self, fractions: dict[str, float], layers=None) -> float:
        """The MACs of `layers` (all by default) when each group keeps `fractions` of its units (1 where not
        named): each layer's MACs times its outputs' fraction times its inputs'. Kept counts over sizes give
        the MACs left; score shares, the MACs the kept units carry (pipeline.allocators.worth)."""
        total = 0.0
        for name in self.macs if layers is None else layers:
            layer, factor = self.layers[name], 1.0
            if layer.out_group is not None:
                factor *= fractions.get(layer.out_group, 1.0)
            if layer.in_groups:
                lost = sum(self.sizes[g] * per_unit * (1.0 - fractions.get(g, 1.0)) for g, per_unit in layer.in_groups)
                factor *= max(0.0, layer.in_total - lost) / layer.in_total
            total += self.macs[name] * factor
        return total


def touching(layers: dict[str, LayerGroups]) -> dict[str, list[str]]:
    """{group: the layers whose widths it sets}, in the layers' order."""
    found: dict[str, list[str]] = {}
    for name, groups in layers.items():
        for group in dict.fromkeys([groups.out_group, *(g for g, _ in groups.in_groups)]):
            if group is not None:
                found.setdefault(group, []).append(name)
    return found

"""Dependency groups and physical removal of units; the only module that imports torch_pruning.

A *unit group* is what one score vector ranks: the output channels of a conv or the hidden neurons
of an MLP with everything coupled to them (BatchNorm, residual partners, consumers' input channels),
or the heads of an attention module. Torch-Pruning's DependencyGraph finds the coupling; attention
heads are handled here because they need the module's `num_heads` to change with the weights."""

from __future__ import annotations

import copy
import fnmatch
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn

from pipeline.attention import HeadAttention
from pipeline.core.errors import ModelError

KINDS = ("channel", "neuron", "head")


@dataclass
class ParamSlice:
    """Positions along `dim` of `module.param` that belong to the units listed in `units`."""

    module: str
    param: str
    dim: int
    positions: list[int]
    units: list[int]


@dataclass
class Consumer:
    """Input channels of a conv or linear layer that carry the group's units (post-activation)."""

    module: str
    channels: list[int]
    units: list[int]
    depthwise: bool = False

    def channels_of(self, units: set[int]) -> list[int]:
        """The input channels of this consumer that carry any of `units`."""
        return [c for c, u in zip(self.channels, self.units) if u in units]


@dataclass
class UnitGroup:
    name: str  # the root module
    kind: str  # channel | neuron | head
    size: int
    producers: list[str]  # modules whose outputs are the units
    params: list[ParamSlice] = field(default_factory=list)
    consumers: list[Consumer] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(data: dict) -> "UnitGroup":
        return UnitGroup(
            name=data["name"], kind=data["kind"], size=data["size"], producers=list(data["producers"]),
            params=[ParamSlice(**p) for p in data["params"]],
            consumers=[Consumer(**c) for c in data["consumers"]],
        )


@dataclass
class Analysis:
    groups: list[UnitGroup]
    notes: list[str]  # what could not be pruned and why, for the report
    stem: str
    classifier: str


def _attention_pruner():
    import torch_pruning as tp

    class AttentionBoundary(tp.pruner.function.BasePruningFunc):
        """Makes an attention module one opaque node whose in/out width is the residual width;
        heads are removed by `remove_heads`, never by the dependency graph."""

        def prune_out_channels(self, layer: HeadAttention, idxs):
            keep = _keep(layer.proj.out_features, idxs)
            _slice_linear(layer.proj, out_keep=keep)
            return layer

        def prune_in_channels(self, layer: HeadAttention, idxs):
            keep = _keep(layer.qkv.in_features, idxs)
            _slice_linear(layer.qkv, in_keep=keep)
            return layer

        def get_out_channels(self, layer: HeadAttention):
            return layer.proj.out_features

        def get_in_channels(self, layer: HeadAttention):
            return layer.qkv.in_features

    return AttentionBoundary()


def _keep(size: int, removed) -> torch.Tensor:
    removed = set(int(i) for i in removed)
    return torch.tensor([i for i in range(size) if i not in removed], dtype=torch.long)


def _slice_linear(layer: nn.Linear, out_keep: torch.Tensor | None = None, in_keep: torch.Tensor | None = None) -> None:
    weight = layer.weight.data
    if out_keep is not None:
        weight = weight[out_keep]
        if layer.bias is not None:
            layer.bias = nn.Parameter(layer.bias.data[out_keep].clone())
        layer.out_features = len(out_keep)
    if in_keep is not None:
        weight = weight[:, in_keep]
        layer.in_features = len(in_keep)
    layer.weight = nn.Parameter(weight.clone())


def execution_order(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Conv and linear layers in the order the forward pass first calls them."""
    order: list[str] = []
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)) and not isinstance(module, nn.modules.linear.NonDynamicallyQuantizableLinear):
            handles.append(module.register_forward_hook(lambda m, i, o, name=name: order.append(name) if name not in order else None))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    return order


def build_graph(model: nn.Module, example: torch.Tensor):
    import torch_pruning as tp

    return tp.DependencyGraph().build_dependency(
        model, example_inputs=example, customized_pruners={HeadAttention: _attention_pruner()}, verbose=False
    )


def _slices_for(module: nn.Module, name: str, is_out: bool, positions: list[int], units: list[int]) -> list[ParamSlice]:
    def make(param: str, dim: int) -> ParamSlice:
        return ParamSlice(name, param, dim, list(positions), list(units))

    slices: list[ParamSlice] = []
    if isinstance(module, nn.Conv2d):
        depthwise = module.groups == module.in_channels == module.out_channels and module.groups > 1
        if is_out or depthwise:
            slices.append(make("weight", 0))
            if module.bias is not None:
                slices.append(make("bias", 0))
        else:
            slices.append(make("weight", 1))
    elif isinstance(module, nn.Linear):
        if is_out:
            slices.append(make("weight", 0))
            if module.bias is not None:
                slices.append(make("bias", 0))
        else:
            slices.append(make("weight", 1))
    elif isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)):
        if getattr(module, "weight", None) is not None:
            slices.append(make("weight", 0))
        if getattr(module, "bias", None) is not None:
            slices.append(make("bias", 0))
    return slices


def _convert_group(graph, group) -> tuple[UnitGroup | None, str | None]:
    """Our plain description of a Torch-Pruning group, or a reason it is not prunable here."""
    root_module = group[0].dep.target.module
    root = graph._module2name[root_module]
    size = len(group[0].idxs)
    producers, slices, consumers, seen = [], [], [], set()
    for item in group.items:
        module = item.dep.target.module
        if isinstance(module, nn.Parameter):
            continue  # unwrapped parameters (positional embeddings) are pruned by TP, not scored
        name = graph._module2name.get(module)
        if name is None:
            continue
        is_out = graph.is_out_channel_pruning_fn(item.dep.handler)
        positions, units = [int(i) for i in item.idxs], [int(u) for u in item.root_idxs]
        if isinstance(module, nn.Conv2d) and 1 < module.groups and not (module.groups == module.in_channels == module.out_channels):
            return None, f"{root}: coupled with grouped conv {name} (groups={module.groups}), kept whole"
        if isinstance(module, HeadAttention):
            return None, f"{root}: the residual width, which attention {name} reads and writes, kept whole"
        depthwise = isinstance(module, nn.Conv2d) and module.groups > 1
        if is_out and isinstance(module, (nn.Conv2d, nn.Linear)) and name not in producers and not depthwise:
            producers.append(name)
        for piece in _slices_for(module, name, is_out, positions, units):
            key = (piece.module, piece.param, piece.dim)
            if key not in seen:
                seen.add(key)
                slices.append(piece)
        if not is_out and isinstance(module, (nn.Conv2d, nn.Linear)) or depthwise and not is_out:
            if not any(c.module == name for c in consumers):
                consumers.append(Consumer(name, positions, units, depthwise=depthwise))
        if depthwise and is_out and not any(c.module == name for c in consumers):
            consumers.append(Consumer(name, positions, units, depthwise=True))
    kind = "neuron" if isinstance(root_module, nn.Linear) else "channel"
    return UnitGroup(root, kind, size, producers, slices, consumers), None


def _head_group(name: str, attention: HeadAttention) -> UnitGroup:
    heads, dim = attention.num_heads, attention.head_dim
    inner = heads * dim
    rows = [section * inner + h * dim + d for section in range(3) for h in range(heads) for d in range(dim)]
    row_units = [h for section in range(3) for h in range(heads) for d in range(dim)]
    columns = list(range(inner))
    column_units = [c // dim for c in columns]
    params = [ParamSlice(f"{name}.qkv", "weight", 0, rows, row_units)]
    if attention.qkv.bias is not None:
        params.append(ParamSlice(f"{name}.qkv", "bias", 0, rows, row_units))
    params.append(ParamSlice(f"{name}.proj", "weight", 1, columns, column_units))
    return UnitGroup(name, "head", heads, [f"{name}.qkv"], params, [Consumer(f"{name}.proj", columns, column_units)])


def analyse(model: nn.Module, example: torch.Tensor, keep_patterns: tuple[str, ...] = ()) -> Analysis:
    """All prunable unit groups of `model` (not modified), stem and classifier excluded."""
    order = execution_order(model, example)
    if not order:
        raise ModelError("the model has no Conv2d or Linear layer to prune")
    stem, classifier = order[0], order[-1]
    kept_whole = {stem, classifier}
    kept_whole |= {n for n, _ in model.named_modules() if any(fnmatch.fnmatch(n, p) for p in keep_patterns)}
    try:
        graph = build_graph(model, example)
    except Exception as err:  # tracing failures carry the layer in their message
        raise ModelError(f"the dependency graph cannot follow this model: {str(err).splitlines()[0]}") from None
    candidates, notes = [], []
    for group in graph.get_all_groups(root_module_types=(nn.Conv2d, nn.Linear)):
        unit_group, reason = _convert_group(graph, group)
        if unit_group is None:
            notes.append(reason)
        elif unit_group.size >= 2:
            candidates.append(unit_group)
    candidates, broken = _drop_inexact(model, example, candidates)
    notes.extend(broken)
    groups = []
    for unit_group in candidates:
        blocked = sorted(set(unit_group.producers) & kept_whole)
        if unit_group.producers == [classifier]:
            continue  # the class outputs are never pruned
        if blocked:
            role = "the stem" if stem in blocked else ("--keep-layers " + ", ".join(blocked))
            notes.append(f"{unit_group.name}: coupled with {role} ({', '.join(unit_group.producers[:4])}{', ...' if len(unit_group.producers) > 4 else ''}), kept whole")
        else:
            groups.append(unit_group)
    for name, module in model.named_modules():
        if isinstance(module, HeadAttention) and module.num_heads > 1 and not (kept_whole & {name, f"{name}.qkv", f"{name}.proj"}):
            groups.append(_head_group(name, module))
    return Analysis(groups, notes, stem, classifier)


def _mixes_channels(group: UnitGroup, model: nn.Module) -> bool:
    """Norms over the channel axis (LayerNorm, GroupNorm) make zeroing a channel differ from removing it."""
    return any(isinstance(model.get_submodule(p.module), (nn.LayerNorm, nn.GroupNorm)) for p in group.params)


def _drop_inexact(model: nn.Module, example: torch.Tensor, groups: list[UnitGroup]) -> tuple[list[UnitGroup], list[str]]:
    """Drop coupled groups whose removal does not do what the dependency graph says.

    Tracing cannot see channel counts hard-coded in a model's code (the zero-padding shortcut of
    CIFAR ResNets): removal then still runs but silently mixes channels up. So each coupled group is
    checked: cutting its units off from every consumer must give the same output as removing them."""
    coupled = [g for g in groups if len(g.producers) > 1 and not _mixes_channels(g, model)]
    if not coupled or _removal_is_exact(model, example, groups, coupled):
        return groups, []
    broken = [g for g in coupled if not _removal_is_exact(model, example, groups, [g])]
    notes = [
        f"{g.name}: the model's forward hard-codes the channel count of {', '.join(g.producers)} "
        f"(e.g. a zero-padding shortcut), so these coupled channels are kept; only uncoupled channels are pruned"
        for g in broken
    ]
    names = {g.name for g in broken}
    return [g for g in groups if g.name not in names], notes


def _trial_units(group: UnitGroup) -> list[int]:
    return sorted({0, group.size // 2 + 1} & set(range(group.size - 1)))


def _removal_is_exact(model: nn.Module, example: torch.Tensor, groups: list[UnitGroup], trial: list[UnitGroup]) -> bool:
    probe = copy.deepcopy(model).eval()
    try:
        with torch.no_grad():
            for group in trial:
                units = set(_trial_units(group))
                for consumer in group.consumers:
                    if consumer.depthwise:
                        continue
                    weight = probe.get_submodule(consumer.module).weight
                    weight[:, consumer.channels_of(units)] = 0.0
            reference = probe(example)
        apply_removal(probe, example, groups, {g.name: _trial_units(g) for g in trial}, check=False)
        with torch.no_grad():
            output = probe(example)
    except Exception:
        return False
    if output.shape != reference.shape:
        return False
    tolerance = 1e-4 * max(1.0, reference.abs().max().item())
    return bool((output - reference).abs().max().item() <= tolerance)


def remove_heads(attention: HeadAttention, heads: list[int]) -> None:
    keep_heads = [h for h in range(attention.num_heads) if h not in set(heads)]
    dim, inner = attention.head_dim, attention.num_heads * attention.head_dim
    rows = torch.tensor([s * inner + h * dim + d for s in range(3) for h in keep_heads for d in range(dim)])
    columns = torch.tensor([h * dim + d for h in keep_heads for d in range(dim)])
    _slice_linear(attention.qkv, out_keep=rows)
    _slice_linear(attention.proj, in_keep=columns)
    attention.num_heads = len(keep_heads)


def apply_removal(model: nn.Module, example: torch.Tensor, groups: list[UnitGroup], removal: dict[str, list[int]], check: bool = True) -> None:
    """Remove the listed units (original indices) of each group from `model`, in place."""
    graph = build_graph(model, example) if any(g.kind != "head" and removal.get(g.name) for g in groups) else None
    for group in groups:
        units = sorted(int(u) for u in removal.get(group.name, []))
        if not units:
            continue
        if len(units) >= group.size:
            raise ModelError(f"cannot remove every unit of {group.name}")
        module = model.get_submodule(group.name)
        if group.kind == "head":
            remove_heads(module, units)
            continue
        pruner = graph.get_pruner_of_module(module)
        graph.get_pruning_group(module, pruner.prune_out_channels, units).prune(record_history=False)
    if check:
        try:
            with torch.no_grad():
                model(example)
        except Exception as err:
            raise ModelError(f"the pruned model no longer runs ({str(err).splitlines()[0]}); this is a bug, please report it") from None


def recalibrate_batchnorm(model: nn.Module, batches) -> int:
    """Re-estimate BatchNorm running statistics from calibration batches (cumulative average);
    returns how many BatchNorm layers were reset."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    saved = [(m, m.momentum) for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    model.eval()
    for norm in norms:
        norm.train()
    try:
        with torch.no_grad():
            for inputs, _ in batches:
                model(inputs)
    finally:
        for norm, momentum in saved:
            norm.momentum = momentum
        model.eval()
    return len(norms)

"""Dependency groups and physical removal of units; the only module that imports torch_pruning.

A *unit group* is what one score vector ranks: the output channels of a conv or the hidden neurons
of an MLP with everything coupled to them (BatchNorm, residual partners, consumers' input channels),
or the heads of an attention module. Torch-Pruning's DependencyGraph finds the coupling; attention
modules are opaque to it and their heads are removed by pipeline.pruning.heads. Only what the
inference forward reaches is pruned; every group is checked by trial removal (validation)."""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from types import SimpleNamespace

import torch
import torch.nn as nn

from pipeline.core.errors import ModelError, is_out_of_memory
from pipeline.pruning.heads import boundary_pruner, head_columns, head_rows, is_head_attention, remove_heads

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
    def from_dict(data: dict) -> UnitGroup:
        return UnitGroup(
            name=data["name"],
            kind=data["kind"],
            size=data["size"],
            producers=list(data["producers"]),
            params=[ParamSlice(**p) for p in data["params"]],
            consumers=[Consumer(**c) for c in data["consumers"]],
        )


def call_order(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Names of the modules whose forward runs for `example`, in the order their calls finish first
    (a layer before the block holding it); one forward pass serves every question about the calls."""
    order: dict[str, None] = {}
    handles = [m.register_forward_hook(lambda m, i, o, name=name: order.setdefault(name)) for name, m in model.named_modules()]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    return list(order)


def execution_order(model: nn.Module, example: torch.Tensor, calls: list[str] | None = None) -> list[str]:
    """Conv and linear layers in the order the forward pass first calls them (`calls`: a call_order already taken)."""

    def is_layer(module: nn.Module) -> bool:
        quantizable = nn.modules.linear.NonDynamicallyQuantizableLinear  # nn.MultiheadAttention's, never called
        return isinstance(module, (nn.Conv2d, nn.Linear)) and not isinstance(module, quantizable)

    return [name for name in (calls if calls is not None else call_order(model, example)) if is_layer(model.get_submodule(name))]


@contextlib.contextmanager
def torch2_graph_fixes():
    """Torch-Pruning 1.6 reads the input sizes of reshapes and splits from autograd attributes that
    torch 2 renamed (`_saved_self_sizes` -> `_saved_self_sym_sizes`; chunk keeps one `_saved_split_size`).
    Without them it takes every reshape for a flatten of channels, so channel shuffles divide by zero
    and window partitions (Swin, MaxViT) expand index maps by the spatial size (tens of GB), and it
    loses the chunk offsets of ShuffleNet's channel split. With the sizes, only a real NCHW -> flat
    reshape maps channels and a chunk maps each part to its channels; whatever stays wrong is caught
    and kept whole by the trial removal of pipeline.pruning.analysis. Active around every use of a
    graph: it maps indices lazily, while groups are made.

    It also bounds the walk that makes a group: Torch-Pruning follows a dependency again whenever it
    arrives with a different index list, even one whose every index went that way before, and a
    chain of partial residuals (RexNet's `x[:, :c] += shortcut`) fragments the lists until one group
    holds tens of thousands of entries (calibrate never ended). Index maps act on each index alone,
    so a list with nothing new for its layer and handler adds nothing: it is not followed again."""
    from torch_pruning.dependency import group as group_module
    from torch_pruning.dependency import index_mapping, shape_infer

    update_reshape, init_shapes = index_mapping.update_reshape_index_mapping, shape_infer.init_shape_information

    def reshape_with_sizes(graph, node):
        grad_fn = node.grad_fn
        if grad_fn is None or hasattr(grad_fn, "_saved_self_sizes") or not hasattr(grad_fn, "_saved_self_sym_sizes"):
            return update_reshape(graph, node)
        node.grad_fn = SimpleNamespace(_saved_self_sizes=tuple(int(s) for s in grad_fn._saved_self_sym_sizes))
        try:
            return update_reshape(graph, node)
        finally:
            node.grad_fn = grad_fn

    def shapes_with_chunks(graph):
        init_shapes(graph)
        for node in graph.module2node.values():
            if node.type.name == "SPLIT":
                _chunk_offsets(node)

    add_dep, has_pruning_op = group_module.Group.add_dep, group_module.Group.has_pruning_op

    def add_and_remember(group, dep, idxs):
        add_dep(group, dep, idxs)
        _followed(group, dep).update(idxs)

    def nothing_new(group, dep, idxs):
        return _followed(group, dep).issuperset(idxs)

    update_concat = index_mapping.update_concat_index_mapping

    def concat_of_known_sizes(graph, node):
        """Torch-Pruning means to leave a concat unmapped when an input's channel count is unknown, but
        sums the counts first (TypeError on None, DPN's dual paths): unknown sizes now leave it unmapped."""
        if node.type.name == "CONCAT" and node.module.concat_sizes is None:
            sizes = [shape_infer.infer_channels_between(graph, n, node) for n in node.inputs]
            if any(size is None for size in sizes):
                return
        return update_concat(graph, node)

    index_mapping.update_reshape_index_mapping = reshape_with_sizes
    index_mapping.update_concat_index_mapping = concat_of_known_sizes
    shape_infer.init_shape_information = shapes_with_chunks
    group_module.Group.add_dep, group_module.Group.has_pruning_op = add_and_remember, nothing_new
    try:
        yield
    finally:
        index_mapping.update_reshape_index_mapping, shape_infer.init_shape_information = update_reshape, init_shapes
        index_mapping.update_concat_index_mapping = update_concat
        group_module.Group.add_dep, group_module.Group.has_pruning_op = add_dep, has_pruning_op


def _followed(group, dep) -> set:
    """The (index, root index) pairs a group has already sent through `dep`'s layer and handler."""
    if not hasattr(group, "_followed"):
        group._followed = {}
    return group._followed.setdefault((dep.target, dep.handler), set())


def _chunk_offsets(node) -> None:
    """Channel offsets of a torch.chunk/split along dim 1, each output node put in its chunk's place."""
    grad_fn = node.grad_fn
    if not (hasattr(grad_fn, "_saved_dim") and hasattr(grad_fn, "_saved_self_sym_sizes")):
        return
    sizes = [int(s) for s in grad_fn._saved_self_sym_sizes]
    if not sizes or grad_fn._saved_dim % len(sizes) != 1:
        return  # only splits of the channel axis map channels
    if hasattr(grad_fn, "_saved_split_sizes"):
        chunks = [int(c) for c in grad_fn._saved_split_sizes]
    elif hasattr(grad_fn, "_saved_split_size"):
        step = int(grad_fn._saved_split_size)
        chunks = [step] * (sizes[1] // step) + ([sizes[1] % step] if sizes[1] % step else [])
    else:
        return
    # which chunk feeds each output node: the autograd edge from the consumer back to this split
    position = {}
    for out in node.outputs:
        edges = [nr for fn, nr in getattr(out.grad_fn, "next_functions", ()) if fn is grad_fn]
        if len(edges) == 1:
            position[out] = edges[0]
    if len(position) != len(node.outputs) or sorted(position.values()) != list(range(len(chunks))):
        node.module.offsets = None  # cannot place every part: map nothing (the trial removal decides)
        return
    node.outputs.sort(key=lambda out: position[out])  # Torch-Pruning maps output i to offsets[i:i + 2]
    offsets = [0]
    for chunk in chunks:
        offsets.append(offsets[-1] + chunk)
    node.module.split_sizes, node.module.offsets = chunks, offsets


def build_graph(model: nn.Module, example: torch.Tensor):
    """Torch-Pruning's dependency graph; use it inside `torch2_graph_fixes()`."""
    import torch_pruning as tp

    attention_types = {type(m) for m in model.modules() if is_head_attention(m)}
    return tp.DependencyGraph().build_dependency(
        model, example_inputs=example, customized_pruners={t: boundary_pruner() for t in attention_types}, verbose=False
    )


def unreached_modules(model: nn.Module, reached: set[str]) -> list[str]:
    """The outermost modules with parameters that the inference forward never calls (`reached`: the
    names in its call_order), auxiliary training heads: left out of pruning, removed from the pruned model."""
    left_out: list[str] = []
    for name, module in model.named_modules():
        if name and name not in reached and any(True for _ in module.parameters()):
            if not any(name.startswith(outer + ".") for outer in left_out):
                if not any(r.startswith(name + ".") for r in reached):  # parts of it run: not left out
                    left_out.append(name)
    return left_out


def drop_modules(model: nn.Module, names: list[str]) -> None:
    """Detach the named submodules (set to None, as torchvision does for aux_logits=False)."""
    for name in names:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, None)


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
        if (
            isinstance(module, nn.Conv2d)
            and 1 < module.groups
            and not (module.groups == module.in_channels == module.out_channels)
        ):
            return None, f"{root}: coupled with grouped conv {name} (groups={module.groups}), kept whole"
        if is_head_attention(module):
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


def _head_group(name: str, attention: nn.Module) -> UnitGroup:
    heads = attention.num_heads
    every = list(range(heads))
    rows = head_rows(attention, every)
    row_units = [unit for unit in every for _ in range(len(rows) // (3 * heads))] * 3
    columns = head_columns(attention, every)
    column_units = [c * heads // len(columns) for c in range(len(columns))]
    params = [ParamSlice(f"{name}.qkv", "weight", 0, rows, row_units)]
    if attention.qkv.bias is not None:
        params.append(ParamSlice(f"{name}.qkv", "bias", 0, rows, row_units))
    params.append(ParamSlice(f"{name}.proj", "weight", 1, columns, column_units))
    return UnitGroup(name, "head", heads, [f"{name}.qkv"], params, [Consumer(f"{name}.proj", columns, column_units)])


def apply_removal(
    model: nn.Module, example: torch.Tensor, groups: list[UnitGroup], removal: dict[str, list[int]], check: bool = True
) -> None:
    """Remove the listed units (original indices) of each group from `model`, in place."""
    with torch2_graph_fixes():
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
    del graph
    if check:
        try:
            with torch.no_grad():
                model(example)
        except Exception as err:
            if is_out_of_memory(err):
                raise
            raise ModelError(
                f"the pruned model no longer runs ({str(err).splitlines()[0]}); this is a bug, please report it"
            ) from None


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

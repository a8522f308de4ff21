"""The layers a latency table measures: each conv and linear layer whose widths pruning changes, as a
shape (what it computes on which input) and the widths it can be cut to, built in isolation as a
one-node ONNX graph for the target to compile and time."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from pipeline.allocators.base import floor_of, step_of
from pipeline.models.hooks import forward_once
from pipeline.pruning.macs import LayerGroups, layer_groups
from pipeline.pruning.surgery import UnitGroup

GRID_POINTS = 8  # widths measured per pruned axis (on the channel block); between them the table interpolates


@dataclass(frozen=True)
class LayerShape:
    """One layer as measured: dense widths, kernel geometry and the input it runs on (batch included)."""

    kind: str  # conv | linear
    in_width: int
    out_width: int
    input_shape: tuple[int, ...]  # the layer's input at the run's batch size
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    depthwise: bool = False  # groups == channels: input and output widths move together

    @property
    def key(self) -> str:
        """The table's key: layers of the same shape share measurements."""
        if self.kind == "linear":
            return f"linear {self.in_width}->{self.out_width} on {'x'.join(map(str, self.input_shape))}"
        geometry = "k{}x{} s{}x{} p{}x{} d{}x{}".format(*self.kernel, *self.stride, *self.padding, *self.dilation)
        kind = "dwconv" if self.depthwise else "conv"
        return f"{kind} {self.in_width}->{self.out_width} {geometry} on {'x'.join(map(str, self.input_shape))}"


@dataclass
class Layer:
    """A model's layer: its shape, the groups that set its widths, and the widths measured for it."""

    name: str
    shape: LayerShape
    groups: LayerGroups
    in_grid: list[int]
    out_grid: list[int]


def measurable_layers(
    model: nn.Module, example: torch.Tensor, groups: list[UnitGroup], round_to: int, max_unit_ratio: float
) -> dict[str, Layer]:
    """Every plain or depthwise conv and every linear layer at least one group resizes, in forward order."""
    inputs = _input_shapes(model, example)
    found = layer_groups(model, list(inputs), groups)
    sizes = {g.name: g for g in groups}
    layers = {}
    for name, shape in inputs.items():
        module, layer = model.get_submodule(name), found[name]
        if layer.out_group is None and not layer.in_groups:
            continue
        described = _shape(module, shape)
        if described is None:
            continue
        out_grid = _grid(sizes[layer.out_group], round_to, max_unit_ratio) if layer.out_group else [described.out_width]
        in_grid = [described.in_width] if described.depthwise else _in_grid(layer, sizes, round_to, max_unit_ratio)
        layers[name] = Layer(name, described, layer, in_grid, out_grid)
    return layers


def _input_shapes(model: nn.Module, example: torch.Tensor) -> dict[str, tuple[int, ...]]:
    shapes, handles = {}, []

    def record(name):
        def hook(module, inputs, output):
            shapes.setdefault(name, tuple(inputs[0].shape))

        return hook

    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            handles.append(module.register_forward_hook(record(name)))
    forward_once(model, example, handles)
    return shapes


def _shape(module: nn.Module, input_shape: tuple[int, ...]) -> LayerShape | None:
    if isinstance(module, nn.Linear):
        return LayerShape("linear", module.in_features, module.out_features, input_shape)
    depthwise = module.groups == module.in_channels == module.out_channels and module.groups > 1
    if (module.groups > 1 and not depthwise) or not isinstance(module.padding, tuple):
        return None  # grouped convs and string paddings: left to the measured correction
    return LayerShape(
        "conv", module.in_channels, module.out_channels, input_shape, tuple(module.kernel_size), tuple(module.stride),
        tuple(module.padding), tuple(module.dilation), depthwise,
    )  # fmt: skip


def _grid(group: UnitGroup, round_to: int, max_unit_ratio: float) -> list[int]:
    """GRID_POINTS widths from the fewest a group may keep to all of them, on its channel block."""
    step = step_of(group.kind, round_to)
    if group.size <= step:
        return [group.size]
    return _spaced(floor_of(group.size, step, max_unit_ratio), group.size, step)


def _in_grid(layer: LayerGroups, groups: dict[str, UnitGroup], round_to: int, max_unit_ratio: float) -> list[int]:
    """Input widths from all input groups at their fewest to all of them at their full width."""
    if not layer.in_groups:
        return [layer.in_total]
    removable = sum((groups[g].size - _grid(groups[g], round_to, max_unit_ratio)[0]) * per for g, per in layer.in_groups)
    return _spaced(layer.in_total - int(round(removable)), layer.in_total, max(1, round_to))


def _spaced(low: int, high: int, step: int) -> list[int]:
    """`low`, `high` and GRID_POINTS - 2 widths evenly between them, rounded to `step`."""
    points = {low, high}
    for i in range(1, GRID_POINTS - 1):
        points.add(max(low, min(high, int(round((low + (high - low) * i / (GRID_POINTS - 1)) / step) * step))))
    return sorted(points)


def onnx_graph(shape: LayerShape, in_width: int, out_width: int, seed: int = 0):
    """A one-node ONNX model of the layer cut to these widths, with random weights and a fixed input shape."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    input_shape = (
        (*shape.input_shape[:-1], in_width)
        if shape.kind == "linear"
        else (shape.input_shape[0], in_width, *shape.input_shape[2:])
    )
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, list(input_shape))
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, None)
    if shape.kind == "linear":
        weight = numpy_helper.from_array(rng.standard_normal((in_width, out_width)).astype(np.float32) * 0.05, "weight")
        bias = numpy_helper.from_array(np.zeros(out_width, np.float32), "bias")
        nodes = [
            helper.make_node("MatMul", ["input", "weight"], ["product"]),
            helper.make_node("Add", ["product", "bias"], ["output"]),
        ]
    else:
        groups = in_width if shape.depthwise else 1
        weight = numpy_helper.from_array(
            rng.standard_normal((out_width, in_width // groups, *shape.kernel)).astype(np.float32) * 0.05, "weight"
        )
        bias = numpy_helper.from_array(np.zeros(out_width, np.float32), "bias")
        nodes = [
            helper.make_node(
                "Conv", ["input", "weight", "bias"], ["output"], kernel_shape=list(shape.kernel), strides=list(shape.stride),
                pads=[*shape.padding, *shape.padding], dilations=list(shape.dilation), group=groups,
            )
        ]  # fmt: skip
    graph = helper.make_graph(nodes, "layer", [x], [y], initializer=[weight, bias])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)

"""Resumed forward passes: the same layer inputs as a pass from the input, after in-place writes and
weight changes, for about one pass over the graph per walk."""

import torch
import torch.fx as fx
import torch.nn as nn
import torchvision

from pipeline.pruning.compensation import _captured
from pipeline.pruning.forward import Resumable
from pipeline.pruning.masks import zero_units
from pipeline.pruning.surgery import ParamSlice, UnitGroup, execution_order


def _layers(model, example):
    return [n for n in execution_order(model, example) if isinstance(model.get_submodule(n), (nn.Conv2d, nn.Linear))]


def _input(resumable, layer, batch, index):
    node = resumable.layer_node[layer]
    return resumable.values(batch, index, {node.args[0].name}, stop_at=layer)[node.args[0].name]


def test_a_walk_gets_every_layers_input_as_a_fresh_pass_does_while_the_weights_change():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()  # in-place ReLUs and `out += identity`
    batches = [torch.randn(2, 3, 32, 32) for _ in range(2)]
    resumable = Resumable(fx.symbolic_trace(model))
    layers = _layers(model, batches[0][:1])
    with torch.no_grad():
        for step, layer in enumerate(layers):
            for index, batch in enumerate(batches):
                torch.testing.assert_close(
                    _input(resumable, layer, batch, index), _captured(model, model.get_submodule(layer), "input", batch)
                )
            model.get_submodule(layer).weight.mul_(0.9)  # re-fitted: the snapshot before it stays good
            if step == len(layers) // 2:  # a channel switched off upstream: the snapshots are stale
                piece = ParamSlice("conv1", "weight", 0, [3], [0])
                zero_units(model, UnitGroup("conv1", "channel", 64, ["conv1"], [piece]), [0])


def test_a_walk_runs_about_one_pass_of_the_graph():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    traced = fx.symbolic_trace(model)
    resumable = Resumable(traced)
    batch = torch.randn(2, 3, 32, 32)
    runs = []
    original = fx.Interpreter.run_node
    fx.Interpreter.run_node = lambda self, node: runs.append(node) or original(self, node)
    try:
        with torch.no_grad():
            for layer in _layers(model, batch[:1]):
                _input(resumable, layer, batch, 0)
                model.get_submodule(layer).weight.mul_(0.9)
    finally:
        fx.Interpreter.run_node = original
    assert len(runs) <= len(traced.graph.nodes)  # a pass from the input for every layer: about 10x as many


class _WritesIntoAKeptValue(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.c3 = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        a = self.c1(x)
        b = self.c2(a)
        a = self.act(a)  # written into a, whose last use it is, and which the snapshot before c2 holds
        return self.c3(a * b)


def test_a_value_the_graph_overwrites_in_place_is_copied_so_the_snapshot_stays_as_taken():
    torch.manual_seed(0)
    model = _WritesIntoAKeptValue().eval()
    resumable = Resumable(fx.symbolic_trace(model))
    batch = torch.randn(3, 4)
    with torch.no_grad():
        first = _input(resumable, "c2", batch, 0).clone()
        assert (first < 0).any()
        later = resumable.values(batch, 0, {"act"}, stop_at="c2")["act"]  # runs on past c2, through the write
        torch.testing.assert_close(later, first.clamp(min=0))
        torch.testing.assert_close(_input(resumable, "c2", batch, 0), first)
        torch.testing.assert_close(_input(resumable, "c3", batch, 0), _captured(model, model.c3, "input", batch))

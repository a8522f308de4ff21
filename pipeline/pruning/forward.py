"""Forward passes resumed where the last one stopped: a re-fit walks the layers in forward order, and
each layer's input on a calibration batch is the previous layer's input carried a few nodes further,
not a new pass from the model's input (which made a walk over L layers cost L^2 / 2 layer passes).

Per batch, the values live at the last layer reached are kept (a snapshot on the model's torch.fx
trace), with the version of every parameter and buffer the graph reads before that point: a snapshot
is used only while none of them has changed (torch bumps a tensor's version on every in-place write;
a replaced tensor is a new object), else the pass starts over from the input. Values the graph
overwrites in place are copied before a pass that starts from a snapshot, so a snapshot stays as taken."""

from __future__ import annotations

import operator

import torch
import torch.fx as fx

from pipeline.core.device import rows_that_fit

CACHE_BYTES = 2 << 30  # snapshots kept over all batches; past it a batch's pass starts from its input


class Resumable:
    """Values of a traced model's nodes on numbered batches, resumed from the last layer reached."""

    def __init__(self, traced: fx.GraphModule):
        self.traced = traced
        self.nodes = list(traced.graph.nodes)
        self.position = {node: i for i, node in enumerate(self.nodes)}
        self.last_use = {node: max((self.position[u] for u in node.users), default=-1) for node in self.nodes}
        self.layer_node = {}
        for node in self.nodes:
            if node.op == "call_module":
                self.layer_node.setdefault(node.target, node)  # a module called twice: its first call
        self._snapshots: dict[int, tuple] = {}  # batch index -> (key, position, values, stamp)
        self._bytes = 0

    def values(self, batch: torch.Tensor, index: int, wanted: set[str], stop_at: str | None = None) -> dict[str, torch.Tensor]:
        """{name: value} of the `wanted` nodes for batch `index`; the batch's snapshot moves to the node
        of layer `stop_at` (its inputs computed, the layer itself not run)."""
        key = (batch.data_ptr(), tuple(batch.shape))
        start, env = 0, {}
        snapshot = self._snapshots.get(index)
        if snapshot is not None and snapshot[0] == key and snapshot[3] == self._stamp(snapshot[1]):
            start, env = snapshot[1], dict(snapshot[2])
        stop = self.position[self.layer_node[stop_at]] if stop_at in self.layer_node else None
        targets = {n for n in self.nodes if n.name in wanted}
        if (stop is not None and stop < start) or any(self.position[n] < start and n not in env for n in targets):
            start, env = 0, {}  # asked for a point before the snapshot: from the input
        found = {n.name: _detached(env[n]) for n in targets if n in env}
        end = max([self.position[n] for n in targets if n.name not in found] + ([stop] if stop is not None else []), default=-1)
        interpreter = fx.Interpreter(self.traced, garbage_collect_values=False)
        interpreter.args_iter, interpreter.env = iter([batch]), env
        kept = start  # values from before `kept` are a snapshot's: copied before a write into them
        for i in range(start, end + 1):
            if i == stop:
                self._keep(index, key, stop, env)
                kept = stop
                if all(n.name in found for n in targets):
                    break  # the layer itself is not run
            node = self.nodes[i]
            if node.op == "output":
                break
            self._copy_overwritten(node, env, kept, wanted)
            env[node] = interpreter.run_node(node)
            if node.name in wanted:
                found[node.name] = _detached(env[node])
            for value in {*node.all_input_nodes}:
                if self.last_use[value] <= i and value.name not in wanted:
                    env.pop(value, None)
        return found

    def _keep(self, index: int, key, position: int, env: dict) -> None:
        live = {n: v for n, v in env.items() if self.last_use[n] >= position}
        size = sum(v.numel() * v.element_size() for v in live.values() if torch.is_tensor(v))
        old = self._snapshots.pop(index, None)
        if old is not None:
            self._bytes -= old[4]
        device = next((v.device for v in live.values() if torch.is_tensor(v)), torch.device("cpu"))
        room = CACHE_BYTES - self._bytes
        if size <= min(room, rows_that_fit(device, 1, room)):  # on CUDA also within the free device memory
            self._snapshots[index] = (key, position, live, self._stamp(position), size)
            self._bytes += size

    def _stamp(self, position: int) -> tuple:
        """The identity and version of every tensor the graph reads before `position`."""
        stamp = []
        for node in self.nodes[:position]:
            if node.op == "call_module":
                module = self.traced.get_submodule(node.target)
                tensors = [*module.parameters(recurse=True), *module.buffers(recurse=True)]
            elif node.op == "get_attr":
                value = operator.attrgetter(node.target)(self.traced)
                tensors = [value] if torch.is_tensor(value) else []
            else:
                continue
            stamp.extend((id(t), t._version) for t in tensors)
        return tuple(stamp)

    def _copy_overwritten(self, node: fx.Node, env: dict, kept: int, wanted: set[str]) -> None:
        """Before a node that writes into its first input: a copy of that input where a snapshot holds it
        or it is a value asked for (each write is its value's last use: one copy at most)."""
        if not _in_place(self.traced, node) or not node.args or not isinstance(node.args[0], fx.Node):
            return
        source = node.args[0]
        if torch.is_tensor(env.get(source)) and (self.position[source] < kept or source.name in wanted):
            env[source] = env[source].clone()


INPLACE_FUNCTIONS = {"iadd", "isub", "imul", "itruediv"}


def _detached(value):
    return value.detach() if torch.is_tensor(value) else value


def _in_place(traced: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return bool(getattr(traced.get_submodule(node.target), "inplace", False))
    if node.op == "call_method":
        return str(node.target).endswith("_")
    if node.op == "call_function":
        name = getattr(node.target, "__name__", "")
        return name in INPLACE_FUNCTIONS or name.endswith("_") or bool(node.kwargs.get("inplace", False))
    return False

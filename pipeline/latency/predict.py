"""A model's latency for any kept widths. Each table layer's time inside the dense network (the runtime's
own profiler on the compiled dense model, where it has one) is scaled by how much the table says the
layer's kept widths save; what the tables do not cover (element-wise layers, pooling, unpruned layers,
the runtime's per-call cost) stays at its dense time; the sum is scaled to the measured dense latency.
Taking only ratios from the tables keeps the prediction consistent with the network it predicts when
the machine's load differs between the two measurements. The measured rounds correct what is left
(pipeline.allocators.latency)."""

from __future__ import annotations

from pipeline.latency.layers import Layer
from pipeline.latency.table import LatencyTable
from pipeline.pruning.macs import kept_inputs, touching


class LatencyModel:
    def __init__(self, layers: dict[str, Layer], table: LatencyTable, dense_ms: float, sizes: dict[str, int],
                 network: tuple[dict[str, float], float] | None = None):  # fmt: skip
        """`network`: ({module: ms}, ms of everything else) of the dense model from the runtime's profiler."""
        self.layers, self.table, self.dense_ms, self.sizes = layers, table, dense_ms, sizes
        self.table_dense = {name: self._table_ms(name, {}) for name in layers}
        self.touching = touching({name: layer.groups for name, layer in layers.items()})
        if network is not None:
            modules, other = network
            self.weight = {name: modules.get(name, self.table_dense[name]) for name in layers}
            profiled = sum(modules.values()) + other + sum(w for n, w in self.weight.items() if n not in modules)
            self.scale, self.fixed = dense_ms / profiled, profiled - sum(self.weight.values())
        else:  # no profiler: the tables' own times, the rest the measured dense latency leaves over
            self.weight = dict(self.table_dense)
            self.scale, self.fixed = 1.0, dense_ms - sum(self.weight.values())

    def widths(self, name: str, kept: dict[str, int]) -> tuple[float, float]:
        layer = self.layers[name]
        out_group = layer.groups.out_group
        out_width = kept.get(out_group, self.sizes[out_group]) if out_group else layer.shape.out_width
        in_width = layer.shape.in_width if layer.shape.depthwise else kept_inputs(layer.groups, self.sizes, kept)
        return in_width, out_width

    def _table_ms(self, name: str, kept: dict[str, int]) -> float:
        return self.table.ms(self.layers[name].shape.key, *self.widths(name, kept))

    def layer_ms(self, name: str, kept: dict[str, int]) -> float:
        """The layer's predicted milliseconds in the network at these widths."""
        return self.scale * self.weight[name] * self._table_ms(name, kept) / max(self.table_dense[name], 1e-9)

    def predict(self, kept: dict[str, int]) -> float:
        return self.scale * self.fixed + sum(self.layer_ms(name, kept) for name in self.layers)

    def group_costs(self, group: str, widths: list[int], around: dict[str, int]) -> list[float]:
        """The change in predicted milliseconds when `group` alone moves from its width in `around` to each
        of `widths`, the other groups held where `around` has them (the knapsack's separable costs)."""
        touched = self.touching.get(group, [])
        here = sum(self.layer_ms(n, around) for n in touched)
        return [sum(self.layer_ms(n, {**around, group: w}) for n in touched) - here for w in widths]

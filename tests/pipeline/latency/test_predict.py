"""A model's latency from its tables, on a constructed table: each layer's time in the network scaled by
what its table says the kept widths save, the rest held."""

import pytest

from pipeline.latency.layers import Layer, LayerShape
from pipeline.latency.predict import LatencyModel
from pipeline.latency.table import LatencyTable, TableKey
from pipeline.pruning.macs import LayerGroups

KEY = TableKey("cpu", "runtime", "hardware", "fp32", 1, 1)


def _model() -> LatencyModel:
    """Two 1x1 convs: `a` (8 -> 16 outputs, group g) feeding `b` (16 inputs of g -> 8). Alone, each
    layer's time is linear in the width cut (16 ms at full width, 4 ms at 4 of 16); in the network, `a`
    takes 10 ms and `b` 6 ms, 4 ms for everything else."""
    shape_a = LayerShape("conv", 8, 16, (1, 8, 4, 4))
    shape_b = LayerShape("conv", 16, 8, (1, 16, 4, 4))
    entries = {
        shape_a.key: {"in": [8], "ms_in": [16.0], "out": [4, 16], "ms_out": [4.0, 16.0], "ms_full": 16.0},
        shape_b.key: {"in": [4, 16], "ms_in": [4.0, 16.0], "out": [8], "ms_out": [16.0], "ms_full": 16.0},
    }
    layers = {
        "a": Layer("a", shape_a, LayerGroups("g", [], 8), [8], [4, 16]),
        "b": Layer("b", shape_b, LayerGroups(None, [("g", 1.0)], 16), [4, 16], [8]),
    }
    return LatencyModel(layers, LatencyTable(KEY, entries), 20.0, {"g": 16}, ({"a": 10.0, "b": 6.0}, 4.0))


def test_a_layer_time_scales_by_what_its_table_saves():
    model = _model()
    assert model.predict({}) == pytest.approx(20.0)
    assert model.layer_ms("a", {"g": 8}) == pytest.approx(5.0)  # half the table's time: half the network's
    assert model.predict({"g": 8}) == pytest.approx(4.0 + 5.0 + 3.0)


def test_a_group_costs_what_its_layers_save_with_the_others_held():
    assert _model().group_costs("g", [4, 8, 16], around={}) == pytest.approx([-12.0, -8.0, 0.0])


def test_without_a_network_profile_the_tables_times_are_the_layers_times():
    model = _model()
    bare = LatencyModel(model.layers, model.table, 40.0, {"g": 16})
    assert bare.predict({}) == pytest.approx(40.0)  # 32 ms of the two layers' tables, 8 ms of everything else
    assert bare.predict({"g": 8}) == pytest.approx(8.0 + 8.0 + 8.0)

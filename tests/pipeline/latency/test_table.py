import dataclasses
import json

import pytest
import torch

from exporters import TARGETS
from pipeline.core.errors import ConfigError
from pipeline.latency import table as tables
from pipeline.latency.layers import measurable_layers
from pipeline.pruning.analysis import analyse
from tests.tiny_models import tiny_mobile

KEY = tables.TableKey("cpu", "onnxruntime 1.0", "Some CPU", "fp32", 1, 2)


def test_every_field_of_the_key_names_its_own_cache_file():
    names = {KEY.file_name()}
    for field, other in (("target", "openvino"), ("runtime", "onnxruntime 2.0"), ("hardware", "Other CPU"),
                         ("precision", "fp16"), ("batch", 8), ("threads", 1), ("format", 0)):  # fmt: skip
        names.add(dataclasses.replace(KEY, **{field: other}).file_name())
    assert len(names) == 8
    assert KEY.file_name() == tables.TableKey(**dataclasses.asdict(KEY)).file_name()  # stable across processes


def test_the_table_interpolates_along_each_axis_and_multiplies_them():
    entry = {"in": [8, 16], "ms_in": [1.0, 2.0], "out": [4, 12], "ms_out": [0.5, 2.0], "ms_full": 2.0}
    table = tables.LatencyTable(KEY, {"layer": entry})
    assert table.ms("layer", 16, 12) == 2.0 and table.ms("layer", 8, 12) == 1.0 and table.ms("layer", 16, 4) == 0.5
    assert table.ms("layer", 12, 12) == pytest.approx(1.5)  # halfway along one axis
    assert table.ms("layer", 8, 4) == pytest.approx(0.25)  # both cut: the product of their factors (1/2 x 1/4)
    one_axis = tables.LatencyTable(
        KEY, {"dw": {"in": [32], "ms_in": [4.0], "out": [8, 32], "ms_out": [1.0, 4.0], "ms_full": 4.0}}
    )
    assert one_axis.ms("dw", 32, 16) == pytest.approx(2.0)


def _layers():
    model, example = tiny_mobile().eval(), torch.randn(1, 3, 32, 32)
    return measurable_layers(model, example, analyse(model, example, ()).groups, 16, 0.9)  # few widths: quick


def test_tables_are_measured_once_then_read_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(tables.CACHE_ENV, str(tmp_path))
    target = TARGETS.load("cpu")()
    key = tables.TableKey("cpu", target.runtime_version(), target.hardware(), "fp32", 1, 1)
    layers = _layers()
    first, notes = tables.for_run(target, key, layers)
    assert "measured 5 layer shapes" in notes[0]
    assert set(first.entries) == {layer.shape.key for layer in layers.values()}
    assert all(ms > 0 for entry in first.entries.values() for ms in [*entry["ms_in"], *entry["ms_out"]])
    saved = tmp_path / "latency" / key.file_name()
    assert saved.is_file()
    again, notes = tables.for_run(target, key, layers)
    assert "all 5 layer shapes from the cache" in notes[0] and again.entries == first.entries


def test_a_brought_in_table_must_match_the_run_and_cover_the_model(tmp_path):
    layers = _layers()
    entries = {layer.shape.key: {"in": layer.in_grid, "ms_in": [1.0] * len(layer.in_grid), "out": layer.out_grid,
                                 "ms_out": [1.0] * len(layer.out_grid), "ms_full": 1.0} for layer in layers.values()}  # fmt: skip
    path = tmp_path / "table.json"
    tables.LatencyTable(dataclasses.replace(KEY, hardware="Jetson Orin"), entries).save(path)
    table, notes = tables.for_run(None, KEY, layers, given=path)  # nothing measured: no target needed
    assert "Jetson Orin" in notes[0] and len(table.entries) == 5
    with pytest.raises(ConfigError, match="measured for batch 1, this run is 8"):
        tables.for_run(None, dataclasses.replace(KEY, batch=8), layers, given=path)
    partial = {"key": dataclasses.asdict(KEY), "entries": dict(list(entries.items())[:2])}
    path.write_text(json.dumps(partial))
    with pytest.raises(ConfigError, match="lacks 3 layer shape"):
        tables.for_run(None, KEY, layers, given=path)
    path.write_text("{}")
    with pytest.raises(ConfigError, match="is not a latency table"):
        tables.for_run(None, KEY, layers, given=path)


class _BusyOnce:
    """The real CPU target, except that the machine is busy (every node 1000x slower) the first time one
    compiled graph is profiled."""

    def __init__(self, busy_graph: int):
        self.target, self.busy_graph, self.profiled = TARGETS.load("cpu")(), str(busy_graph), set()

    def __getattr__(self, name):
        return getattr(self.target, name)

    def layer_times(self, compiled_dir, *args):
        nodes = self.target.layer_times(compiled_dir, *args)
        if compiled_dir.name == self.busy_graph and compiled_dir.name not in self.profiled:
            nodes = {name: {**node, "ms": node["ms"] * 1000} for name, node in nodes.items()}
        self.profiled.add(compiled_dir.name)
        return nodes


def test_a_grid_point_measured_while_the_machine_was_busy_keeps_its_undisturbed_time():
    layer = next(layer for layer in _layers().values() if not layer.shape.depthwise and len(layer.out_grid) > 1)
    busy = _BusyOnce(busy_graph=0)  # the grid's first point, narrower than the full layer
    entry = tables.measure_layer(busy, KEY, layer)
    assert busy.profiled == {str(i) for i in range(len(entry["in"]) + len(entry["out"]) - 1)}  # every point, each pass
    assert max(entry["ms_in"] + entry["ms_out"]) < 10 * entry["ms_full"]  # none kept the busy pass's 1000x

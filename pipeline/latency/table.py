"""Per-layer latency tables: each layer shape's time at a grid of kept widths, measured on the target
runtime itself (each point a one-layer graph compiled by the target and timed by its own per-layer
profiler; without one, whole calls of all points of a layer interleaved), interpolated in between. Tables are
cached per target, runtime version, hardware, precision, batch and threads, so a second run on the
same machine measures nothing; one measured elsewhere (`pipeline latency-table`) can be brought in."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from pipeline.core.artifacts import write_json
from pipeline.core.errors import ConfigError
from pipeline.core.log import progress
from pipeline.latency.layers import Layer, onnx_graph
from profiles import measure, timing

CACHE_ENV = "PIPELINE_CACHE_DIR"
PROFILED_CALLS = 30  # calls per grid point under the runtime's per-layer profiler (median per layer)
PASSES = 3  # profiled passes over a layer's grid points; a point keeps its fastest pass
LAYOUT_OPS = ("reorder", "transpose")  # node types of layout conversions, left out of a layer's time
POINT_SECONDS = 0.15  # without a profiler: timed seconds per grid point, over TRIALS interleaved trials
TRIALS = 3


@dataclass(frozen=True)
class TableKey:
    """What a measured latency depends on besides the layer: a table is reused only where all of it matches."""

    target: str
    runtime: str
    hardware: str
    precision: str
    batch: int
    threads: int
    format: int = 3  # how entries are measured; a table of another format is measured again

    def file_name(self) -> str:
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]
        return f"{self.target}-{self.precision}-b{self.batch}-{digest}.json"


def cache_dir() -> Path:
    """$PIPELINE_CACHE_DIR, else $XDG_CACHE_HOME (or ~/.cache)/structured-pruning-pipeline, then latency/."""
    root = os.environ.get(CACHE_ENV)
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "structured-pruning-pipeline"
    return Path(root) / "latency"


class LatencyTable:
    """{layer shape key: {"in": widths, "ms_in": ms at each (output at full width), "out": widths, "ms_out": ms at
    each (input at full width), "ms_full": ms of the dense layer}} under one TableKey."""

    def __init__(self, key: TableKey, entries: dict | None = None):
        self.key, self.entries = key, dict(entries or {})

    def ms(self, shape_key: str, in_width: float, out_width: float) -> float:
        """Interpolated along each axis; a layer cut on both is taken as separable (its time scales by the
        product of the two axes' factors, as its MACs do)."""
        entry = self.entries[shape_key]
        along_in = float(np.interp(in_width, entry["in"], entry["ms_in"]))
        along_out = float(np.interp(out_width, entry["out"], entry["ms_out"]))
        return along_in * along_out / entry["ms_full"]

    def covers(self, layer: Layer) -> bool:
        entry = self.entries.get(layer.shape.key)
        return entry is not None and entry["in"][0] <= layer.in_grid[0] and entry["out"][0] <= layer.out_grid[0]

    def to_dict(self) -> dict:
        return {"key": asdict(self.key), "entries": self.entries}

    @classmethod
    def from_dict(cls, data: dict) -> LatencyTable:
        return cls(TableKey(**data["key"]), data["entries"])

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, self.to_dict())


def load(path: Path) -> LatencyTable:
    try:
        return LatencyTable.from_dict(json.loads(Path(path).read_text()))
    except FileNotFoundError:
        raise ConfigError(f"latency table {path} does not exist") from None
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ConfigError(f"{path} is not a latency table ({type(err).__name__}: {err})") from None


def for_run(target, key: TableKey, layers: dict[str, Layer], given: Path | None = None) -> tuple[LatencyTable, list[str]]:
    """The table for these layers: brought in (`given`, which must be complete and match the run), else the
    cache's, with what it lacks measured now and added to it. Returns it with what happened, for the log."""
    if given is not None:
        table = load(given)
        _check_given(table, key, given)
        missing = sorted({layer.shape.key for layer in layers.values() if not table.covers(layer)})
        if missing:
            raise ConfigError(
                f"latency table {given} lacks {len(missing)} layer shape(s) of this model (first: {missing[0]}); "
                f"build one for it with `pipeline latency-table`"
            )
        return table, [f"latency table from {given} ({len(table.entries)} layer shapes, {table.key.hardware})"]
    path = cache_dir() / key.file_name()
    table = load(path) if path.is_file() else LatencyTable(key)
    todo = {key: layer for key, layer in _by_shape(layers).items() if not table.covers(layer)}
    shapes = len({layer.shape.key for layer in layers.values()})
    if not todo:
        return table, [f"latency table: all {shapes} layer shapes from the cache ({path})"]
    measure_layers(target, key, list(todo.values()), table, lambda: table.save(path))
    reused = shapes - len(todo)
    return table, [f"latency table: measured {len(todo)} layer shapes on {key.target}, {reused} from the cache ({path})"]


def _by_shape(layers: dict[str, Layer]) -> dict[str, Layer]:
    """One layer per shape, measured on the union of the grids of the layers sharing it (the same conv may be
    cut on its input in one place and not in another)."""
    merged: dict[str, Layer] = {}
    for layer in layers.values():
        seen = merged.get(layer.shape.key)
        if seen is None:
            merged[layer.shape.key] = replace(layer)
        else:
            seen.in_grid = sorted({*seen.in_grid, *layer.in_grid})
            seen.out_grid = sorted({*seen.out_grid, *layer.out_grid})
    return merged


def _check_given(table: LatencyTable, key: TableKey, path: Path) -> None:
    for field in ("target", "precision", "batch"):
        if getattr(table.key, field) != getattr(key, field):
            raise ConfigError(
                f"latency table {path} was measured for {field} {getattr(table.key, field)}, this run is {getattr(key, field)}"
            )


def measure_layers(target, key: TableKey, layers: list[Layer], table: LatencyTable, checkpoint=None) -> None:
    """Measure each layer's grid into `table`; `checkpoint` is called after each (a long build resumes)."""
    with progress(len(layers), f"latency table ({key.target})", "layer") as bar:
        for layer in layers:
            table.entries[layer.shape.key] = measure_layer(target, key, layer)
            if checkpoint is not None:
                checkpoint()
            bar.update(1)


def measure_layer(target, key: TableKey, layer: Layer) -> dict:
    """One layer's milliseconds at every (input width, output width) of its grid, each point a one-layer graph
    compiled and profiled by the target."""
    import onnx

    shape = layer.shape
    full_in, full_out = shape.in_width, shape.out_width
    if shape.depthwise:  # one axis: the input width is the output width
        points = [(w, w) for w in layer.out_grid]
    else:  # each axis with the other at its full width
        points = sorted({*((i, full_out) for i in layer.in_grid), *((full_in, o) for o in layer.out_grid), (full_in, full_out)})
    with tempfile.TemporaryDirectory(prefix="latency-") as scratch:
        compiled, input_shapes = {}, {}
        for index, (in_width, out_width) in enumerate(points):
            folder = Path(scratch) / str(index)
            folder.mkdir()
            graph = onnx_graph(shape, in_width, out_width)
            onnx.save(graph, str(folder / "layer.onnx"))
            target.compile(folder / "layer.onnx", folder, key.precision, (shape.input_shape[0],))
            compiled[str(index)] = folder
            input_shapes[str(index)] = tuple(d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim)
        ms = _profiled_ms(target, key, compiled, input_shapes, points)
        if ms is None:  # no per-layer profiler: whole calls of the one-layer graphs, interleaved
            ms = _call_ms(target, key, compiled, input_shapes, points)
    if shape.depthwise:
        ms_out = [ms[(w, w)] for w in layer.out_grid]
        return {"in": [full_in], "ms_in": [ms_out[-1]], "out": layer.out_grid, "ms_out": ms_out, "ms_full": ms_out[-1]}
    return {"in": layer.in_grid, "ms_in": [ms[(i, full_out)] for i in layer.in_grid],
            "out": layer.out_grid, "ms_out": [ms[(full_in, o)] for o in layer.out_grid], "ms_full": ms[(full_in, full_out)]}  # fmt: skip


def _profiled_ms(target, key: TableKey, compiled: dict[str, Path], input_shapes: dict, points) -> dict | None:
    """Each point's time by the runtime's profiler, the fastest of PASSES passes over all the points: the
    machine busy for a moment (another process, files written back) slows every call of the point it
    falls on, up to tens of times, and a point measured once would keep that; a later pass does not."""
    passes = []
    for _ in range(PASSES):
        ms = {point: _layer_ms(target, key, compiled[str(i)], input_shapes[str(i)]) for i, point in enumerate(points)}
        if None in ms.values():
            return None
        passes.append(ms)
    return {point: min(p[point] for p in passes) for point in points}


def _layer_ms(target, key: TableKey, compiled: Path, input_shape: tuple[int, ...]) -> float | None:
    """The layer's own time by the runtime's profiler: every node but the layout reorders the one-layer graph
    needs at its edges (inside a network, consecutive layers stay in the runtime's blocked layout)."""
    nodes = target.layer_times(compiled, input_shape, key.threads, key.precision, PROFILED_CALLS)
    if nodes is None:
        return None
    return sum(n["ms"] for n in nodes.values() if not any(word in n["op"].lower() for word in LAYOUT_OPS))


def _call_ms(target, key: TableKey, compiled: dict[str, Path], input_shapes: dict, points) -> dict:
    times = {}
    for name, path in compiled.items():  # the target's own timer (trtexec), where it has one
        timed = target.profile({name: path}, input_shapes[name], POINT_SECONDS, TRIALS)
        if timed is None:
            break
        times.update(timed)
    if len(times) < len(compiled):
        runs = {}
        for name, path in compiled.items():
            session = target.open(path, input_shapes[name], key.threads, key.precision)
            runs[name] = measure.callable_of(session, input_shapes[name])
        times = timing.interleaved(runs, POINT_SECONDS, TRIALS, warmup_seconds=0.02)
    return {point: measure.median_ms(times[str(i)]) for i, point in enumerate(points)}

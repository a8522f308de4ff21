"""The latency budget the prune stage hands its allocator: the model's latency predicted from the
tables, and any candidate widths measured whole on the target (pruned copy -> ONNX -> the target's
compile -> timed interleaved with the dense model, as the profile stage times them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from exporters import TARGETS
from exporters import onnx as onnx_export
from pipeline.allocators.base import removal_of
from pipeline.core.log import info
from pipeline.latency import table as tables
from pipeline.latency.layers import measurable_layers
from pipeline.latency.predict import LatencyModel
from pipeline.models.clone import clone_model
from pipeline.pruning import surgery
from profiles import layers as layer_times
from profiles import measure

NETWORK_PROFILE_CALLS = 30
SETTLE_TRIES = 5  # dense timings at most until two in a row agree
AGREE = 0.05  # within this, two dense timings agree
DISTURBED = 1.15  # a round whose dense time is this far above the settled one is timed again (once)


@dataclass(frozen=True)
class Setting:
    """Where and how latency is measured: the run's first target, precision, input (batch included), threads."""

    target: str
    precision: str
    input_shape: tuple[int, ...]
    threads: int
    seconds: float  # timed seconds per model and round (the profile stage's)
    trials: int
    round_to: int
    max_unit_ratio: float
    table: Path | None = None  # a table brought in (--latency-table)


class LatencyBudget:
    """`model` predicts, `measure(kept)` measures; `speedup` is the goal (a --latency-ms turned into one)."""

    def __init__(self, setting: Setting, model: torch.nn.Module, groups, scores, workdir: Path,
                 speedup: float | None = None, latency_ms: float | None = None):  # fmt: skip
        self.setting, self.groups, self.scores, self.workdir = setting, groups, scores, Path(workdir)
        self.network = clone_model(model).cpu().eval()
        self.target = TARGETS.load(setting.target)()
        self.example = torch.randn(setting.input_shape)
        key = tables.TableKey(setting.target, self.target.runtime_version(), self.target.hardware(), setting.precision,
                              setting.input_shape[0], setting.threads)  # fmt: skip
        layers = measurable_layers(self.network, self.example, groups, setting.round_to, setting.max_unit_ratio)
        self.table, notes = tables.for_run(self.target, key, layers, setting.table)
        self.notes = notes
        for note in notes:
            info(f"prune: {note}")
        self.dense_dir = self.compile(self.network, "dense")
        dense_ms = self._settled_dense_ms()
        self.model = LatencyModel(layers, self.table, dense_ms, {g.name: g.size for g in groups}, self.network_times())
        self.speedup = speedup if speedup is not None else dense_ms / latency_ms
        self.measured = 0

    def measure(self, kept: dict[str, int]) -> tuple[float, float]:
        """(dense ms, pruned ms) of these kept counts on the target, timed in one interleaved run."""
        self.measured += 1
        return self._against_dense(self.compile(self.pruned(kept), f"candidate-{self.measured}"))

    def pruned(self, kept: dict[str, int]) -> torch.nn.Module:
        """A copy of the dense network with all but the `kept` best-scoring units of each group removed."""
        candidate = clone_model(self.network)
        surgery.apply_removal(candidate, self.example[:1], self.groups, removal_of(self.groups, self.scores, kept))
        return candidate

    def _against_dense(self, pruned_dir: Path) -> tuple[float, float]:
        """(dense ms, pruned ms) timed interleaved; once more when the dense model timed far slower than settled."""
        for _ in range(2):
            times = self.time({"dense": self.dense_dir, "pruned": pruned_dir})
            dense_ms, pruned_ms = measure.median_ms(times["dense"]), measure.median_ms(times["pruned"])
            if dense_ms <= DISTURBED * self.model.dense_ms:
                break
            info(
                f"prune: the dense model timed {dense_ms / self.model.dense_ms:.2f}x slower than before: the machine was busy, timing again"
            )
        return dense_ms, pruned_ms

    def _settled_dense_ms(self) -> float:
        """The dense latency once two timings in a row agree: a machine still busy from the table's builds
        (compiles, files written back) times slower for some seconds, which would skew the first round."""
        last = None
        for _ in range(SETTLE_TRIES):
            now = measure.median_ms(self.time({"dense": self.dense_dir})["dense"])
            if last is not None and abs(now / last - 1.0) <= AGREE:
                return now
            last = now
        return last

    def network_times(self) -> tuple[dict[str, float], float] | None:
        """The dense model's per-layer times inside the network, from the runtime's own profiler."""
        s = self.setting
        times = self.target.layer_times(self.dense_dir, s.input_shape, s.threads, s.precision, NETWORK_PROFILE_CALLS)
        if times is None:
            return None
        return layer_times.match(times, layer_times.onnx_layers(self.dense_dir.parent / "model.onnx"))

    def compile(self, network: torch.nn.Module, name: str) -> Path:
        folder = self.workdir / name
        folder.mkdir(parents=True, exist_ok=True)
        onnx_export.export(network, self.example[:1], folder / "model.onnx")
        out = folder / self.setting.target
        out.mkdir(exist_ok=True)
        self.target.compile(folder / "model.onnx", out, self.setting.precision, (self.setting.input_shape[0],))
        return out

    def time(self, compiled: dict[str, Path]) -> dict:
        s = self.setting
        return measure.time_compiled(self.target, compiled, s.input_shape, s.threads, s.precision, s.seconds, s.trials)

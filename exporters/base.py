"""What a deployment target provides: compile an ONNX file into its own format, and open a session
that runs it. Sessions take and return numpy arrays; profiling only needs `run`."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Protocol

import numpy as np


class Session(Protocol):
    def run(self, batch: np.ndarray) -> np.ndarray: ...


class Target:
    name = "target"
    files: tuple[str, ...] = ()
    # A run may reach this target's compile stage even where its runtime is missing: the stages
    # before it (and the readiness check on the exported graph) still tell the user something.
    checks_before_runtime = False
    int8_activations = "s8"  # the Q/DQ flavour its INT8 kernels want (exporters.quantize)

    def block(self, precision: str) -> int:
        """Channel multiple the runtime's kernels use; unaligned widths are padded back up."""
        return 8

    def runtime_version(self) -> str:
        """The runtime and its version, e.g. "onnxruntime 1.22.0": a latency measured under another is not reused."""
        raise NotImplementedError

    def hardware(self) -> str:
        """What the runtime computes on (CPU model, GPU name): a latency measured on other hardware is not reused."""
        return cpu_name()

    def precision_problem(self, precision: str) -> str | None:
        """Why this target cannot run `precision`, or None."""
        return None

    def check(self, onnx_path: Path, precision: str) -> list:
        """Readiness findings for the graph (see exporters.readiness.Finding); none by default."""
        return []

    def compile(self, onnx_path: Path, out_dir: Path, precision: str, batches: tuple[int, ...] = (1,)) -> dict:
        """Write this target's files for `onnx_path` into `out_dir`; returns facts for the manifest.
        `batches`: the batch sizes it will run (the first is the one to optimise for)."""
        raise NotImplementedError

    def open(self, compiled_dir: Path, input_shape: tuple[int, ...], threads: int, precision: str = "fp32") -> Session:
        raise NotImplementedError

    def profile(self, compiled: dict[str, Path], input_shape: tuple[int, ...], seconds: float, trials: int):
        """Per-trial seconds per variant when the target times itself (trtexec); None: time sessions."""
        return None

    def layer_times(
        self, compiled_dir: Path, input_shape: tuple[int, ...], threads: int, precision: str = "fp32", runs: int = 20
    ):
        """Per-layer milliseconds per call from the runtime's own profiler, {layer: {"op": type, "ms": time}},
        as the runtime names its (fused) layers; None where the target has no profiler here."""
        return None

    def layer_reasons(self, compiled_dir: Path) -> list[str]:
        """What the runtime did to the pruned widths (padding, reformats), for the verdict."""
        return []


def default_threads() -> int:
    """Every core this process may run on."""
    from pipeline.core.device import available_cores

    return available_cores()


def cpu_vector_block() -> int:
    """oneDNN's channel block on this CPU: 16 with AVX-512, else 8 (nChw16c / nChw8c)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return 8
    return 16 if " avx512f" in flags else 8


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def warm_up(run, seconds: float = 0.1) -> None:
    """Call `run` for about `seconds` (at least once) before profiling it: thread pools started, caches and
    allocators settled."""
    import time

    started = time.perf_counter()
    run()
    while time.perf_counter() - started < seconds:
        run()

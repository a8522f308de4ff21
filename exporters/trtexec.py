"""trtexec: the command lines the TensorRT target runs where only the binary is installed (Jetson
images), and the parsers of what it prints and writes. Pure functions; tensorrt.py runs them.

Version trap (trtexec's own options, TensorRT 10.x and 11.x source): from 11.0 CUDA graphs, no data
transfers, spin-wait and a separate profile run are on by default and their opt-in flags are
deprecated no-ops; before 11.0 they are off unless asked for, so they are passed explicitly."""

from __future__ import annotations

import json
import re
from pathlib import Path

WORKSPACE_MIB = 2048
WARMUP_MS = 500
PERCENTILES = "50,90,99"


def parse_version(text: str) -> tuple[int, int, int] | None:
    """(major, minor, patch) from trtexec's banner '[TensorRT v100300]' (10.3.0) or 'v8601' (8.6.1)."""
    match = re.search(r"TensorRT v(\d+)", text)
    if not match:
        return None
    digits = match.group(1)
    if len(digits) >= 6:  # MMmmpp from 10.0 on
        return int(digits[:-4]), int(digits[-4:-2]), int(digits[-2:])
    return int(digits[:-3]), int(digits[-3:-2]), int(digits[-2:])  # Mmpp before 10.0


def shape_spec(name: str, shape: tuple[int, ...]) -> str:
    return f"{name}:{'x'.join(str(d) for d in shape)}"


def build_command(
    onnx: Path,
    engine: Path,
    input_name: str,
    shapes: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]],
    precision: str,
    timing_cache: Path,
    layer_info: Path,
    version: tuple[int, int, int],
) -> list[str]:
    """Build an engine with an optimisation profile (min, opt, max) on the batch axis and detailed
    layer information; no inference."""
    low, opt, high = shapes
    command = [
        "trtexec",
        f"--onnx={onnx}",
        f"--saveEngine={engine}",
        f"--minShapes={shape_spec(input_name, low)}",
        f"--optShapes={shape_spec(input_name, opt)}",
        f"--maxShapes={shape_spec(input_name, high)}",
        f"--memPoolSize=workspace:{WORKSPACE_MIB}",
        f"--timingCacheFile={timing_cache}",
        "--profilingVerbosity=detailed",
        f"--exportLayerInfo={layer_info}",
    ]
    if precision == "fp32":
        command.append("--noTF32")  # TF32 is on by default: fp32 means fp32 (strict parity)
    elif precision == "fp16":
        command.append("--fp16")
    elif precision == "int8":  # the graph carries Q/DQ nodes (explicit quantisation); FP16 where none
        command += ["--int8", "--fp16"]
    command.append("--skipInference" if version >= (8, 5, 0) else "--buildOnly")
    return command


def profile_command(
    engine: Path, input_name: str, shape: tuple[int, ...], seconds: float, times: Path, version: tuple[int, int, int]
) -> list[str]:
    """Time an engine: GPU compute per inference, CUDA graphs, no host<->device copies, spin-wait."""
    command = [
        "trtexec",
        f"--loadEngine={engine}",
        f"--shapes={shape_spec(input_name, shape)}",
        f"--warmUp={WARMUP_MS}",
        f"--duration={max(1, round(seconds))}",
        "--iterations=10",
        f"--percentile={PERCENTILES}",
        f"--exportTimes={times}",
    ]
    if version < (11, 0, 0):
        command += ["--useCudaGraph", "--noDataTransfers", "--useSpinWait"]
    return command


def layer_profile_command(engine: Path, input_name: str, shape: tuple[int, ...], runs: int, profile: Path) -> list[str]:
    """Run an engine `runs` times after a warm-up with TensorRT's layer profiler on, the per-layer times
    written as JSON (--exportProfile: [{"count": N}, {"name", "timeMs", "averageMs", "medianMs"?, "percentage"}, ...])."""
    return [
        "trtexec",
        f"--loadEngine={engine}",
        f"--shapes={shape_spec(input_name, shape)}",
        f"--warmUp={WARMUP_MS}",
        f"--iterations={runs}",
        "--duration=0",
        "--noDataTransfers",
        f"--exportProfile={profile}",
    ]


def output_command(engine: Path, input_name: str, shape: tuple[int, ...], inputs: Path, outputs: Path) -> list[str]:
    """One inference on the given input (raw float32 file), its outputs written as JSON: for parity."""
    return [
        "trtexec",
        f"--loadEngine={engine}",
        f"--shapes={shape_spec(input_name, shape)}",
        f"--loadInputs={input_name}:{inputs}",
        f"--exportOutput={outputs}",
        "--iterations=1",
        "--warmUp=0",
        "--duration=0",
    ]


def read_times(path: Path) -> list[float]:
    """GPU compute seconds of each timed inference from --exportTimes (its 'computeMs' field)."""
    records = json.loads(Path(path).read_text())
    return [float(r["computeMs"]) / 1e3 for r in records if "computeMs" in r]


_SUMMARY = re.compile(r"(?<!Total )GPU Compute Time: (.*)")
_STAT = re.compile(r"(min|max|mean|median|percentile\((\d+(?:\.\d+)?)%\)) = ([\d.eE+-]+) ms")


def parse_compute_summary(text: str) -> dict[str, float]:
    """The 'GPU Compute Time: min = .. ms, max = .., mean = .., median = .., percentile(90%) = ..'
    line of trtexec's performance summary, in milliseconds."""
    matches = list(_SUMMARY.finditer(text))
    match = matches[-1] if matches else None  # the last one: the summary, after any per-run lines
    if match is None:
        return {}
    stats = {}
    for stat in _STAT.finditer(match.group(1)):
        key = f"p{float(stat.group(2)):g}" if stat.group(2) else stat.group(1)
        stats[key] = float(stat.group(3))
    return stats


def read_outputs(path: Path) -> dict[str, list[float]]:
    """--exportOutput JSON: a list of {"name", "dimensions", "values"}."""
    return {entry["name"]: entry["values"] for entry in json.loads(Path(path).read_text())}

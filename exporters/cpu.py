"""ONNX Runtime on the CPU: the graph optimised once at the highest level and saved (ORT format; as
ONNX with its weights in a data file beside it when they pass the 2 GB a flatbuffer can hold), then
sessions with a fixed thread count."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from exporters.base import Target, cpu_vector_block, warm_up
from pipeline.core.errors import ConfigError

MODEL_FILE = "model.ort"
BIG_MODEL_FILE = "model.onnx"  # ONNX + model.onnx.data, for weights past the ORT format's 2 GB


class OnnxRuntimeCpu(Target):
    name = "cpu"
    files = (MODEL_FILE,)
    int8_activations = "u8"  # ONNX Runtime's x86 integer kernels are U8S8 (exporters.quantize)

    def block(self, precision: str) -> int:
        return cpu_vector_block()

    def runtime_version(self) -> str:
        import onnxruntime as ort

        return f"onnxruntime {ort.__version__}"

    def precision_problem(self, precision: str) -> str | None:
        if precision not in ("fp32", "fp16", "int8"):
            return f"precision {precision} is not supported (fp32, int8)"
        if precision == "fp16":
            return (
                "ONNX Runtime's CPU execution provider has no FP16 convolution or GEMM kernels (it would cast back to "
                "FP32 around every layer); use --precision fp32 or int8 on the cpu target, fp16 on openvino or tensorrt"
            )
        return None

    def check(self, onnx_path: Path, precision: str) -> list:
        """The one rule that matters here: ONNX Runtime loads the graph."""
        import onnxruntime as ort

        from exporters.readiness import Finding

        try:
            ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        except Exception as err:  # ORT raises its own exception types for every load failure
            return [Finding("loads", "error", f"ONNX Runtime {ort.__version__} cannot load it: {str(err).splitlines()[0][:200]}")]
        return []

    def compile(self, onnx_path: Path, out_dir: Path, precision: str, batches: tuple[int, ...] = (1,)) -> dict:
        import onnxruntime as ort

        from exporters.onnx import needs_external_data

        problem = self.precision_problem(precision)
        if problem:
            raise ConfigError(f"--precision {precision} on the cpu target: {problem}")
        # int8: `onnx_path` is the Q/DQ graph; the optimiser fuses it into integer kernels
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        _save_optimized_to(options, Path(out_dir), needs_external_data(onnx_path))
        options.log_severity_level = 3
        ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        return {"runtime": "onnxruntime", "version": ort.__version__, "optimization": "ORT_ENABLE_ALL", "precision": precision}

    def open(self, compiled_dir: Path, input_shape: tuple[int, ...], threads: int, precision: str = "fp32"):
        return _OrtSession(_compiled_model(compiled_dir), threads)

    def layer_times(
        self, compiled_dir: Path, input_shape: tuple[int, ...], threads: int, precision: str = "fp32", runs: int = 20
    ):
        """ONNX Runtime's session profiler: each node's median kernel time over `runs` calls after a warm-up."""
        import tempfile

        with tempfile.TemporaryDirectory() as scratch:
            session = _OrtSession(_compiled_model(compiled_dir), threads, profile_in=scratch)
            feed = np.random.default_rng(0).standard_normal(input_shape).astype(np.float32)
            warm_up(lambda: session.run(feed))  # profiled too: dropped as each node's first calls
            for _ in range(runs):
                session.run(feed)
            trace = Path(session.session.end_profiling()).read_text()
        return node_times(trace, runs)


def node_times(trace: str, runs: int) -> dict[str, dict]:
    """Per-node median milliseconds per call over the last `runs` calls of an ONNX Runtime profile (Chrome trace
    JSON: events of category "Node" named <node>_kernel_time with their duration in microseconds); the calls
    before them (warm-up) are left out."""
    import json

    calls: dict[str, list[float]] = {}
    found: dict[str, dict] = {}
    for event in json.loads(trace):
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        node = event["name"][: -len("_kernel_time")]
        calls.setdefault(node, []).append(event["dur"] / 1000.0)
        args = event.get("args", {})
        # input shapes (activations, then weights): how a node renamed by ONNX Runtime's layout passes
        # (a fused conv is named after a tensor) is matched to the layer it came from
        shapes = [next(iter(item.values())) for item in args.get("input_type_shape", [])]
        found.setdefault(node, {"op": args.get("op_name", ""), "input_shapes": shapes})
    return {node: {"op": entry["op"], "ms": float(np.median(calls[node][-runs:])), "input_shapes": entry["input_shapes"]}
            for node, entry in found.items()}  # fmt: skip


def _compiled_model(compiled_dir: Path) -> Path:
    """The optimised model compile saved: ORT format, or ONNX with a data file past 2 GB of weights."""
    small = Path(compiled_dir) / MODEL_FILE
    return small if small.is_file() else Path(compiled_dir) / BIG_MODEL_FILE


def _save_optimized_to(options, out_dir: Path, big: bool) -> None:
    if not big:
        options.optimized_model_filepath = str(out_dir / MODEL_FILE)
        options.add_session_config_entry("session.save_model_format", "ORT")
        return
    options.optimized_model_filepath = str(out_dir / BIG_MODEL_FILE)
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name", f"{BIG_MODEL_FILE}.data")
    options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")


class _OrtSession:
    def __init__(self, path: Path, threads: int, profile_in: str | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if profile_in:
            options.enable_profiling = True
            options.profile_file_prefix = str(Path(profile_in) / "profile")
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: batch})[0]

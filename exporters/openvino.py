"""OpenVINO: ONNX -> IR (.xml/.bin) with convert_model/save_model (weights compressed to FP16 for
--precision fp16; the Q/DQ graph for int8), compiled for the CPU plugin with a latency hint, one
stream and an explicit inference precision (on CPUs with AMX or AVX512-BF16 the plugin would
otherwise silently run "fp32" models in bf16)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from exporters.base import Target, cpu_vector_block, warm_up
from pipeline.core.errors import ConfigError

XML, BIN = "model.xml", "model.bin"


class OpenVinoCpu(Target):
    name = "openvino"
    files = (XML, BIN)

    def block(self, precision: str) -> int:
        return cpu_vector_block()

    def runtime_version(self) -> str:
        import openvino as ov

        return f"openvino {ov.get_version()}"

    def check(self, onnx_path: Path, precision: str) -> list:
        """The one rule that matters here: OpenVINO's ONNX frontend converts the graph."""
        import openvino as ov

        from exporters.readiness import Finding

        try:
            ov.convert_model(str(onnx_path))
        except Exception as err:  # the frontend raises its own exception types
            return [Finding("loads", "error", f"OpenVINO {ov.get_version()} cannot convert it: {str(err).splitlines()[0][:200]}")]
        return []

    def compile(self, onnx_path: Path, out_dir: Path, precision: str, batches: tuple[int, ...] = (1,)) -> dict:
        import openvino as ov

        if precision not in ("fp32", "fp16", "int8"):
            raise ConfigError(f"precision {precision} is not supported by the openvino target (fp32, fp16, int8)")
        # int8: `onnx_path` is the Q/DQ graph, which the CPU plugin runs with integer kernels
        model = ov.convert_model(str(onnx_path))
        ov.save_model(model, str(Path(out_dir) / XML), compress_to_fp16=precision == "fp16")
        return {
            "runtime": "openvino",
            "version": ov.get_version(),
            "precision": precision,
            "device": "CPU",
            "inference_precision": inference_precision(precision),
        }

    def open(self, compiled_dir: Path, input_shape: tuple[int, ...], threads: int, precision: str = "fp32"):
        return _OpenVinoSession(Path(compiled_dir) / XML, input_shape, threads, inference_precision(precision))

    def layer_times(
        self, compiled_dir: Path, input_shape: tuple[int, ...], threads: int, precision: str = "fp32", runs: int = 20
    ):
        """The CPU plugin's performance counters: each executed layer's median real time over `runs` calls after a warm-up."""
        session = _OpenVinoSession(
            Path(compiled_dir) / XML, input_shape, threads, inference_precision(precision), performance_counters=True
        )
        feed = np.random.default_rng(0).standard_normal(input_shape).astype(np.float32)
        warm_up(lambda: session.run(feed))
        calls: dict[str, list[float]] = {}
        types: dict[str, str] = {}
        for _ in range(runs):
            session.run(feed)
            for info in session.request.get_profiling_info():  # counters of the last call
                if str(info.status).endswith("EXECUTED"):
                    calls.setdefault(info.node_name, []).append(info.real_time.total_seconds() * 1000.0)
                    types[info.node_name] = info.node_type
        shapes = _input_shapes(session.compiled)
        return {
            name: {"op": types[name], "ms": float(np.median(times)), "input_shapes": shapes.get(name, [])}
            for name, times in calls.items()
        }


def _input_shapes(compiled) -> dict[str, list[list[int]]]:
    """Each executed layer's static input shapes (weights included) from the compiled runtime graph, so a
    layer whose name the plugin changed is still found by its weight shape."""
    shapes = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        inputs = [i.get_partial_shape() for i in op.inputs()]
        shapes[op.get_friendly_name()] = [list(p.to_shape()) if p.is_static else [] for p in inputs]
    return shapes


@functools.cache
def core():
    """One OpenVINO Core per process. Each Core loads its own CPU plugin, which swaps the calling thread's
    signal stack for one of its own and puts back the one it found when it is destroyed; plugins of
    several Cores destroyed out of order leave the thread on a stack already unmapped, and the next
    Python signal handler run there (the DataLoader's SIGCHLD, Ctrl-C) crashes the process."""
    import openvino as ov

    return ov.Core()


def inference_precision(precision: str) -> str:
    """The CPU plugin's INFERENCE_PRECISION_HINT: f16 for an FP16 run where the CPU has FP16 arithmetic
    (AVX512-FP16 / AMX-FP16), else f32; an FP16 IR then only stores weights in FP16. Never the plugin's
    own default, which is bf16 on AMX/AVX512-BF16 CPUs even for "FP32" models."""
    if precision != "fp16":
        return "f32"
    capabilities = core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return "f16" if "FP16" in capabilities else "f32"


class _OpenVinoSession:
    def __init__(
        self, xml: Path, input_shape: tuple[int, ...], threads: int, inference_precision: str, performance_counters: bool = False
    ):
        model = core().read_model(str(xml))
        model.reshape(list(input_shape))  # static shapes: what a deployment compiles for
        config = {
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": "1",
            "INFERENCE_NUM_THREADS": str(threads),
            "INFERENCE_PRECISION_HINT": inference_precision,
            **({"PERF_COUNT": "YES"} if performance_counters else {}),
        }
        self.compiled = core().compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()

    def run(self, batch: np.ndarray) -> np.ndarray:
        self.request.infer({0: batch})
        return self.request.get_output_tensor(0).data.copy()

"""OpenVINO: ONNX -> IR (.xml/.bin) with convert_model/save_model, compiled for the CPU plugin with
a latency hint, one stream and an explicit inference precision (on CPUs with AMX or AVX512-BF16 the
plugin would otherwise silently run "fp32" models in bf16)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from exporters.base import Target, cpu_vector_block
from pipeline.core.errors import ConfigError

XML, BIN = "model.xml", "model.bin"
PRECISION_HINTS = {"fp32": "f32"}


class OpenVinoCpu(Target):
    name = "openvino"
    files = (XML, BIN)

    def block(self, precision: str) -> int:
        return cpu_vector_block()

    def compile(self, onnx_path: Path, out_dir: Path, precision: str) -> dict:
        import openvino as ov

        if precision not in PRECISION_HINTS:
            raise ConfigError(f"the openvino target runs {', '.join(PRECISION_HINTS)} here; --precision {precision} is not supported yet")
        model = ov.convert_model(str(onnx_path))
        ov.save_model(model, str(Path(out_dir) / XML), compress_to_fp16=False)
        return {"runtime": "openvino", "version": ov.get_version(), "precision": precision, "device": "CPU"}

    def open(self, compiled_dir: Path, input_shape: tuple[int, ...], threads: int, precision: str = "fp32"):
        return _OpenVinoSession(Path(compiled_dir) / XML, input_shape, threads, PRECISION_HINTS.get(precision, "f32"))


class _OpenVinoSession:
    def __init__(self, xml: Path, input_shape: tuple[int, ...], threads: int, inference_precision: str):
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(xml))
        model.reshape(list(input_shape))  # static shapes: what a deployment compiles for
        config = {
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": "1",
            "INFERENCE_NUM_THREADS": str(threads),
            "INFERENCE_PRECISION_HINT": inference_precision,
        }
        self.compiled = core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()

    def run(self, batch: np.ndarray) -> np.ndarray:
        self.request.infer({0: batch})
        return self.request.get_output_tensor(0).data.copy()

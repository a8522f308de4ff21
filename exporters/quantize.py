"""INT8 as explicit quantisation: a Q/DQ ONNX graph made by ONNX Runtime's static quantisation from
calibration images. The same file runs as INT8 on ONNX Runtime's CPU provider, OpenVINO's CPU plugin
and TensorRT, so the three targets compare one quantisation.

Weights: symmetric INT8 per output channel. Activations come in two flavours, one per kind of
kernel: "s8", symmetric INT8 with zero points of 0, which TensorRT's parser requires (onnx-tensorrt
operator matrix, QuantizeLinear/DequantizeLinear) and OpenVINO runs well; and "u8", asymmetric UINT8,
the U8S8 form ONNX Runtime's x86 integer kernels are built for (measured on a pruned ResNet-18, 2
threads, AVX-512 VNNI: fp32 12.1 ms, s8 Q/DQ 18.7 ms, u8 Q/DQ 8.2 ms). Each target names its flavour
(Target.int8_activations)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

CALIBRATION_IMAGES = 256  # MinMax ranges settle long before this on image classifiers


def to_qdq(onnx_path: Path, out_path: Path, calibration: np.ndarray, activations: str = "s8", batch: int = 32) -> dict:
    """Write the Q/DQ version of `onnx_path` to `out_path`; returns facts for the manifest."""
    import onnxruntime
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self, name: str):
            self.batches = iter(
                [{name: calibration[i : i + batch].astype(np.float32)} for i in range(0, len(calibration), batch)]
            )

        def get_next(self):
            return next(self.batches, None)

    from exporters.onnx import needs_external_data

    big = needs_external_data(onnx_path)  # weights beside the graph, as export wrote them
    input_name = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).get_inputs()[0].name
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        # shapes and fusions quantisation needs
        quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True, save_as_external_data=big)
        quantize_static(
            str(prepared),
            str(out_path),
            Reader(input_name),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8 if activations == "s8" else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            use_external_data_format=big,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": activations == "s8", "WeightSymmetric": True},
        )
    return {
        "format": "QDQ",
        "activations": "int8 symmetric" if activations == "s8" else "uint8 asymmetric",
        "weights": "int8 symmetric per channel",
        "calibration_images": int(len(calibration)),
        "method": "MinMax",
        "onnxruntime": onnxruntime.__version__,
    }

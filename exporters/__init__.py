"""Deployment targets: one line each. `block` is the channel multiple the target computes in for
fp32, so the prune stage rounds kept widths to it (design.md, "channels rounded per target")."""

from pipeline.core.registry import Entry, Registry

TARGETS = Registry("target", [
    Entry("cpu", "exporters.cpu:OnnxRuntimeCpu", "ONNX Runtime, CPU execution provider, full graph optimisation",
          requires=("onnxruntime",), install_hint="pip install onnxruntime"),
    Entry("openvino", "exporters.openvino:OpenVinoCpu", "OpenVINO IR (.xml/.bin) compiled for the CPU plugin",
          requires=("openvino",), install_hint="pip install openvino (or: pip install -e '.[openvino]')"),
])

"""Deployment targets: one line each. `block` is the channel multiple the target computes in for
fp32, so the prune stage rounds kept widths to it (design.md, "channels rounded per target")."""

from pipeline.core.registry import Entry, Registry

TARGETS = Registry(
    "target",
    [
        Entry(
            "cpu",
            "exporters.cpu:OnnxRuntimeCpu",
            "ONNX Runtime, CPU execution provider, full graph optimisation",
            requires=("onnxruntime",),
            install_hint="pip install onnxruntime",
        ),
        Entry(
            "openvino",
            "exporters.openvino:OpenVinoCpu",
            "OpenVINO IR (.xml/.bin) compiled for the CPU plugin",
            requires=("openvino",),
            install_hint="pip install openvino (or: pip install -e '.[openvino]')",
        ),
        Entry(
            "tensorrt",
            "exporters.tensorrt:TensorRt",
            "TensorRT engine on an NVIDIA GPU (Python API, or trtexec where only the binary is there, as on Jetson)",
            install_hint="on a GPU host: pip install tensorrt (NVIDIA's package index), or build docker/Dockerfile.tensorrt",
            availability="exporters.tensorrt:unavailable_reason",
        ),
    ],
)

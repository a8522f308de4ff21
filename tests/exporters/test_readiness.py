"""The TensorRT readiness rules on graphs built to pass and to fail each one."""

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from exporters import onnx as onnx_export
from exporters import readiness
from pipeline.models.build import build_model
from tests.tiny_models import TINY_SPECS


def conv_graph(
    path, out_channels=16, in_channels=3, opset=17, spatial=("32", "32"), extra_nodes=(), extra_inits=(), domain_opsets=()
):
    """input -> Conv(out_channels) -> Conv(out_channels) -> output, plus any extra nodes."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((out_channels, in_channels, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((out_channels, out_channels, 1, 1)).astype(np.float32), "w2")
    dims = ["batch", in_channels, *[int(d) if d.isdigit() else d for d in spatial]]
    nodes = [
        helper.make_node("Conv", ["input", "w1"], ["a"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["a", "w2"], ["output"], name="conv2"),
        *extra_nodes,
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)],
        [w1, w2, *extra_inits],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *domain_opsets])
    onnx.save(model, str(path))
    return path


def rules(findings, severity=None):
    return [f.rule for f in findings if severity is None or f.severity == severity]


def test_a_plain_aligned_graph_is_ready(tmp_path):
    assert readiness.check(conv_graph(tmp_path / "m.onnx", out_channels=32), "int8") == []


def test_an_exported_pruned_model_is_ready(tmp_path):
    torch.manual_seed(0)
    model = build_model(TINY_SPECS["resnet"]).eval()
    path = tmp_path / "m.onnx"
    onnx_export.export(model, torch.randn(1, 3, 32, 32), path)
    assert rules(readiness.check(path, "fp16"), "error") == []


@pytest.mark.parametrize("op, version", [("Unique", "10"), ("NonZero", "8.6"), ("QLinearConv", "10.3")])
def test_an_unsupported_operator_fails_by_name(tmp_path, op, version):
    node = helper.make_node(op, ["output"], ["extra"], name="the_bad_node")
    findings = readiness.check(conv_graph(tmp_path / "m.onnx", extra_nodes=[node]), "fp32", version)
    failing = [f for f in findings if f.rule == "supported-ops"]
    assert (
        len(failing) == 1 and failing[0].severity == "error" and "the_bad_node" in failing[0].message and op in failing[0].message
    )
    assert str(failing[0]).startswith("FAIL supported-ops:")


def test_nonzero_is_supported_from_tensorrt_10(tmp_path):
    node = helper.make_node("NonZero", ["output"], ["extra"], name="nz")
    assert "supported-ops" not in rules(readiness.check(conv_graph(tmp_path / "m.onnx", extra_nodes=[node]), "fp32", "10"))


def test_a_custom_domain_operator_needs_a_plugin(tmp_path):
    node = helper.make_node("MyOp", ["output"], ["extra"], name="custom", domain="com.example")
    findings = readiness.check(
        conv_graph(tmp_path / "m.onnx", extra_nodes=[node], domain_opsets=[helper.make_opsetid("com.example", 1)]), "fp32"
    )
    assert "plugin" in next(f.message for f in findings if f.rule == "supported-ops")


@pytest.mark.parametrize(
    "opset, version, ok", [(17, "10", True), (21, "10", False), (20, "10", True), (18, "8.6", False), (17, "8.6", True)]
)
def test_opset_range(tmp_path, opset, version, ok):
    findings = readiness.check(conv_graph(tmp_path / "m.onnx", opset=opset), "fp32", version)
    assert ("opset" not in rules(findings)) == ok


def test_int64_values_outside_int32_fail_where_tensorrt_casts(tmp_path):
    big = numpy_helper.from_array(np.array([1, 2**40], dtype=np.int64), "big")
    path = conv_graph(tmp_path / "m.onnx", extra_inits=[big])
    assert rules(readiness.check(path, "fp32", "8.6"), "error") == ["int64-weights"]
    assert "int64-weights" not in rules(readiness.check(path, "fp32", "10"))  # INT64 is native from 10
    small = numpy_helper.from_array(np.array([1, -1], dtype=np.int64), "shape")
    assert readiness.check(conv_graph(tmp_path / "s.onnx", extra_inits=[small], out_channels=32), "fp32", "8.6") == []


def test_only_the_batch_axis_may_be_dynamic(tmp_path):
    findings = readiness.check(conv_graph(tmp_path / "m.onnx", spatial=("height", "32")), "fp32")
    assert rules(findings, "error") == ["dynamic-dims"] and "axis 2" in findings[0].message


def test_unaligned_channels_are_a_warning_naming_the_convs(tmp_path):
    findings = readiness.check(conv_graph(tmp_path / "m.onnx", out_channels=50), "fp16")
    assert [(f.rule, f.severity) for f in findings] == [("channel-alignment", "warning")]
    assert "conv1 (50 out)" in findings[0].message and "conv2 (50 out, 50 in)" in findings[0].message
    assert "3 in" not in findings[0].message  # the image's 3 channels are exempt
    assert readiness.check(conv_graph(tmp_path / "a.onnx", out_channels=48), "fp16") == []
    assert rules(readiness.check(conv_graph(tmp_path / "b.onnx", out_channels=48), "int8")) == ["channel-alignment"]  # 48 % 32


def test_unknown_version_is_a_clear_error(tmp_path):
    from pipeline.core.errors import ConfigError

    with pytest.raises(ConfigError, match="no TensorRT parser facts for version 7"):
        readiness.check(conv_graph(tmp_path / "m.onnx"), "fp32", "7.2")

import pytest
import torch

from exporters import TARGETS
from exporters import onnx as onnx_export
from profiles import layers
from tests.tiny_models import tiny_resnet


def test_module_names_are_rebuilt_from_the_exporters_scopes():
    assert layers.module_of("/features/features.1/conv/conv.0/conv.0.0/Conv") == "features.1.conv.0.0"
    assert layers.module_of("/layer1/layer1.0/conv1/Conv") == "layer1.0.conv1"
    assert layers.module_of("/fc/Gemm") == "fc"


@pytest.mark.parametrize("target_name", ["cpu", "openvino"])
def test_each_runtimes_layer_times_are_matched_to_every_conv_and_linear(target_name, tmp_path):
    if TARGETS.unavailable_reason(target_name):
        pytest.skip(TARGETS.unavailable_reason(target_name))
    target = TARGETS.load(target_name)()
    model = tiny_resnet().eval()
    onnx_export.export(model, torch.randn(1, 3, 32, 32), tmp_path / "model.onnx")
    (tmp_path / "compiled").mkdir()
    target.compile(tmp_path / "model.onnx", tmp_path / "compiled", "fp32")
    times = target.layer_times(tmp_path / "compiled", (2, 3, 32, 32), threads=1, runs=5)
    by_module, other = layers.match(times, layers.onnx_layers(tmp_path / "model.onnx"))
    weighted = {n for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}
    if not any(op in t["op"] for t in times.values() for op in ("Gemm", "MatMul", "FullyConnected")):
        weighted.discard("fc")  # a runtime that reports no layer for the classifier leaves nothing to match
    # ONNX Runtime's renamed fused convs too, by their weight shapes
    assert set(by_module) == weighted, {name: (t["op"], t.get("input_shapes")) for name, t in times.items()}
    assert all(ms > 0 for ms in by_module.values()) and other >= 0
    assert sum(by_module.values()) + other == pytest.approx(sum(t["ms"] for t in times.values()))
    # renamed as no graph node: found by weight shape (ONNX Runtime's pre-packed Gemm weight has none to match)
    renamed = {f"layer_{i}": t for i, t in enumerate(times.values())}
    found = set(layers.match(renamed, layers.onnx_layers(tmp_path / "model.onnx"))[0])
    assert found == (weighted if target_name == "openvino" else weighted - {"fc"}), found


def test_the_layers_that_shrank_least_against_their_macs_come_first_with_a_reason():
    dense = {"a": 1.0, "b": 1.0, "dw": 0.5, "fc": 0.1}
    pruned = {"a": 0.5, "b": 0.9, "dw": 0.45, "fc": 0.1}
    macs = {"a": [100, 50], "b": [100, 50], "dw": [10, 5], "fc": [10, 10]}
    rows = layers.slowest_to_shrink(dense, pruned, macs)
    assert [r["layer"] for r in rows] == ["b", "dw"]  # a shrank with its MACs; fc was not pruned
    assert rows[0]["excess_ms"] == pytest.approx(0.4)
    assert "fixed per-layer cost" in layers.reason(rows[0], "dense", 32, 8)
    assert "padded: 30 channels are computed as 32" in layers.reason(rows[0], "dense", 30, 8)
    assert "memory-bound" in layers.reason(rows[1], "depthwise", 16, 8)
    not_pruned = {"macs_kept": 1.0, "time_kept": 1.0, "pruned_ms": 0.1}
    assert "not pruned" in layers.reason(not_pruned, "dense", 64, 8)


def test_blocked_layout_names_and_padded_channels_still_match_their_layers():
    graph = [
        {"node": "/a1/Conv", "module": "a1", "weight_shape": [24, 16, 3, 3], "outputs": ["/a1/Conv_output_0", "/Relu_output_0"]},
        {"node": "/a2/Conv", "module": "a2", "weight_shape": [16, 24, 3, 3], "outputs": ["/a2/Conv_output_0"]},
        {"node": "/b1/Conv", "module": "b1", "weight_shape": [32, 16, 3, 3], "outputs": ["/b1/Conv_output_0"]},
    ]  # fmt: skip
    # ONNX Runtime with AVX-512 computes a1's 24 channels as 32: its shape alone would also fit b1
    times = {
        "node_0": {"op": "Conv", "ms": 1.0, "input_shapes": [[2, 16, 8, 8], [32, 16, 3, 3], [32]]},
        "node_1": {"op": "Conv", "ms": 2.0, "input_shapes": [[2, 32, 8, 8], [16, 32, 3, 3], [16]]},
        "node_2": {"op": "Conv", "ms": 4.0, "input_shapes": [[2, 16, 8, 8], [32, 16, 3, 3], [32]]},
    }
    assert layers.match(times, graph) == ({"a1": 1.0, "a2": 2.0, "b1": 4.0}, 0.0)
    named = {"/Relu_output_0_nchwc": times["node_0"], "/b1/Conv_output_0_nchwc": times["node_2"]}
    assert layers.match(named, graph) == ({"a1": 1.0, "b1": 4.0}, 0.0)
    wider = {"node": {"op": "Conv", "ms": 1.0, "input_shapes": [[2, 16, 8, 8], [48, 16, 3, 3], [48]]}}
    assert layers.match(wider, graph) == ({}, 1.0)  # 24 is never padded beyond the largest block

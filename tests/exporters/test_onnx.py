import math

import numpy as np
import onnx
import pytest
import torch

from exporters import onnx as onnx_export
from pipeline.models.build import build_model
from tests.tiny_models import TINY_SPECS


@pytest.mark.parametrize("kind", sorted(TINY_SPECS))
def test_export_is_checked_dynamic_and_matches_pytorch(kind, tmp_path):
    torch.manual_seed(0)
    model = build_model(TINY_SPECS[kind]).eval()
    path = tmp_path / "model.onnx"
    onnx_export.export(model, torch.randn(1, 3, 32, 32), path)
    graph = onnx.load(str(path))
    assert graph.opset_import[0].version >= 17
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    inputs = torch.randn(5, 3, 32, 32)  # another batch size than exported
    result = onnx_export.parity(onnx_export.outputs(model, inputs), path, inputs)
    assert result["max_abs"] < 1e-4 and result["top1_agreement"] == 1.0 and result["samples"] == 5
    assert result["sqnr_db"] > 80  # fp32 rounding only


def test_sqnr_measures_the_noise_against_the_signal():
    expected = np.array([[3.0, -4.0]])  # signal power 25
    assert onnx_export._sqnr_db(expected, expected + np.array([[0.5, 0.0]])) == 20.0  # noise 0.25: 100x
    assert onnx_export._sqnr_db(expected, expected) == 300.0  # exact, still a finite JSON number


def test_conv_channel_count_reads_the_graph(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 5, 1)).eval()
    path = tmp_path / "m.onnx"
    onnx_export.export(model, torch.randn(1, 3, 8, 8), path)
    assert onnx_export.conv_output_channels(path) == 13
    assert onnx_export.weight_elements(path) == sum(p.numel() for p in model.parameters())


def test_a_graph_too_big_for_one_message_keeps_its_weights_in_one_data_file(tmp_path, monkeypatch):
    """Above the protobuf limit (here lowered to 0 bytes) the weights go to <name>.onnx.data; the
    graph still checks, runs on ONNX Runtime and OpenVINO, and nothing else is left beside it."""
    from exporters import readiness

    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 0)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 4)
    ).eval()
    path = tmp_path / "big.onnx"
    onnx_export.export(model, torch.randn(1, 3, 8, 8), path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "big.onnx.data"]
    structure = onnx_export.load_structure(path)
    external = {t.name for t in structure.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL}
    assert any(t.name in external for t in structure.graph.initializer if 4 * math.prod(t.dims) >= 4096)
    inputs = torch.randn(3, 3, 8, 8)
    assert onnx_export.parity(onnx_export.outputs(model, inputs), path, inputs)["max_abs"] < 1e-5
    assert onnx_export.conv_output_channels(path) == 8
    assert onnx_export.weight_elements(path) == sum(p.numel() for p in model.parameters())
    assert not [f for f in readiness.check(path) if f.severity == "error"]
    openvino = pytest.importorskip("openvino")
    from exporters.openvino import core

    # f32 explicitly: on CPUs with bf16 units the plugin would otherwise compute in bf16
    compiled = core().compile_model(openvino.convert_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    assert abs(compiled(inputs.numpy())[0] - onnx_export.outputs(model, inputs)).max() < 1e-4


def test_outputs_in_chunks_equal_one_forward(monkeypatch):
    torch.manual_seed(0)
    model, inputs, sizes = build_model(TINY_SPECS["resnet"]).eval(), torch.randn(5, 3, 32, 32), []
    with torch.no_grad():
        whole = model(inputs).numpy()
    model.register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[0]))
    monkeypatch.setattr(onnx_export, "OUTPUT_CHUNK_ELEMENTS", 2 * 3 * 32 * 32)
    np.testing.assert_allclose(onnx_export.outputs(model, inputs), whole, rtol=1e-5, atol=1e-6)
    assert sizes == [2, 2, 1]

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
    result = onnx_export.parity(model, path, torch.randn(5, 3, 32, 32))  # another batch size than exported
    assert result["max_abs"] < 1e-4 and result["top1_agreement"] == 1.0 and result["samples"] == 5


def test_conv_channel_count_reads_the_graph(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 5, 1)).eval()
    path = tmp_path / "m.onnx"
    onnx_export.export(model, torch.randn(1, 3, 8, 8), path)
    assert onnx_export.conv_output_channels(path) == 13
    assert onnx_export.weight_elements(path) == sum(p.numel() for p in model.parameters())

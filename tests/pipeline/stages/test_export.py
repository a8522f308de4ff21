import torch
import torch.nn as nn

from exporters import onnx as onnx_export
from pipeline.stages.export import conv_channels


class _EcaNet(nn.Module):
    """A conv whose channels an ECA gate (a 1-D conv across the pooled channels) re-weights."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3)
        self.gate = nn.Conv1d(1, 1, 3, padding=1, bias=False)
        self.shared = nn.Conv2d(6, 6, 3, padding=1, groups=6)  # applied twice, as CoaT's shared position encoding
        self.unused = nn.Conv2d(6, 6, 1)  # never called: not in the graph
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        x = self.conv(x)
        weights = torch.sigmoid(self.gate(x.mean((2, 3)).unsqueeze(1))).squeeze(1)
        x = self.shared(self.shared(x * weights[:, :, None, None]))
        return self.head(x.mean((2, 3)))


def test_conv_channels_count_what_onnx_writes_as_conv(tmp_path):
    model = _EcaNet().eval()
    onnx_export.export(model, torch.randn(1, 3, 8, 8), tmp_path / "eca.onnx")
    assert (
        conv_channels(model, torch.randn(1, 3, 8, 8)) == 6 + 1 + 2 * 6 == onnx_export.conv_output_channels(tmp_path / "eca.onnx")
    )
